"""Build the Lightning Trainer (strategy, precision, loggers, checkpoints) from the hardware/logger configs."""

from __future__ import annotations

import csv
import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger

from steerable.config.schema import HardwareConfig, LoggerConfig, TrainerConfig
from steerable.hardware import effective_precision
from steerable.run_dir import wandb_run_id, write_text_atomic
from steerable.training.checkpoint_io import AtomicCheckpointIO
from steerable.training.progress import PlainProgress, console_is_terminal

log = logging.getLogger(__name__)

# ResumableSampler restores the data position itself (see CausalLMModule.on_load_checkpoint).
warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")

LAST_CHECKPOINT = "checkpoints/last.ckpt"


def build_strategy(hardware: HardwareConfig) -> Any:
    """FSDP is FSDP2 (`fully_shard` per decoder layer and the root, applied in CausalLMModule.configure_model)
    through Lightning's ModelParallelStrategy with full state dicts gathered to rank 0: frozen and LoRA weights
    share units freely, and it runs on CPU (gloo) as well as GPU."""
    if hardware.strategy == "fsdp":
        from lightning.pytorch.strategies import ModelParallelStrategy

        return ModelParallelStrategy(
            data_parallel_size=hardware.devices * hardware.num_nodes,
            tensor_parallel_size=1,
            save_distributed_checkpoint=False,
        )
    if hardware.strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(find_unused_parameters=False, static_graph=False)
    return hardware.strategy.value


def build_loggers(cfg: LoggerConfig, run_dir: Path, run_name: str, hparams: dict) -> list[Logger]:
    loggers: list[Logger] = []
    if cfg.csv:
        loggers.append(CSVLogger(save_dir=str(run_dir), name="", version=""))
    if cfg.tensorboard:
        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=""))
    if cfg.wandb:
        settings = cfg.wandb_settings
        loggers.append(
            WandbLogger(
                project=settings.project,
                entity=settings.entity,
                group=settings.group,
                tags=list(settings.tags),
                name=run_name,
                save_dir=str(run_dir),
                offline=settings.offline,
                log_model=settings.log_model,
                id=wandb_run_id(run_dir),
                resume="allow",
            )
        )
    for logger in loggers:
        logger.log_hyperparams(hparams)
    return loggers


@dataclass
class RunRecord:
    """Where and how a fit records itself: the logger config, the run folder (checkpoints/, metrics.csv), the
    run's name for the loggers and the hyperparameters they store."""

    logger: LoggerConfig
    run_dir: Path
    name: str
    hparams: dict


def build_trainer(
    trainer_cfg: TrainerConfig,
    hardware: HardwareConfig,
    record: RunRecord,
    extra_callbacks: list[pl.Callback] | None = None,
    overrides: dict[str, Any] | None = None,
) -> pl.Trainer:
    """`overrides` replaces Trainer arguments (online methods: one epoch over prompts, manual clipping)."""
    run_dir = record.run_dir
    loggers = build_loggers(record.logger, run_dir, record.name, record.hparams)
    callbacks: list[pl.Callback] = [
        ModelCheckpoint(
            dirpath=str(run_dir / "checkpoints"),
            filename="step-{step:06d}",
            auto_insert_metric_name=False,
            every_n_train_steps=trainer_cfg.checkpoint_every_n_steps,
            save_top_k=1,
            monitor="step",
            mode="max",
            save_last=True,
            save_on_train_epoch_end=False,
        ),
        *(extra_callbacks or []),
    ]
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    plain = not console_is_terminal()  # a file or a pipe: Lightning's bar would print only at the end
    if plain:
        callbacks.append(PlainProgress())
    deepspeed = hardware.strategy in ("deepspeed_stage_2", "deepspeed_stage_3")
    accumulate = trainer_cfg.accumulate_grad_batches
    val_every = (trainer_cfg.val_check_interval or trainer_cfg.max_steps) * accumulate
    arguments: dict[str, Any] = dict(
        accelerator=hardware.accelerator.value,
        devices=hardware.devices,
        num_nodes=hardware.num_nodes,
        strategy=build_strategy(hardware),
        precision=effective_precision(hardware),
        max_steps=trainer_cfg.max_steps,
        max_epochs=trainer_cfg.max_epochs if trainer_cfg.max_epochs is not None else -1,
        accumulate_grad_batches=accumulate,
        gradient_clip_val=trainer_cfg.gradient_clip_val,
        val_check_interval=val_every,
        check_val_every_n_epoch=None,
        limit_val_batches=trainer_cfg.limit_val_batches,
        log_every_n_steps=trainer_cfg.log_every_n_steps,
        deterministic=trainer_cfg.deterministic,
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
        use_distributed_sampler=False,  # ResumableSampler shards by rank itself
        plugins=None if deepspeed else [AtomicCheckpointIO()],
        enable_model_summary=False,
        enable_progress_bar=not plain,
        num_sanity_val_steps=0,
    )
    return pl.Trainer(**{**arguments, **(overrides or {})})


def gathered_state_dict(trainer: pl.Trainer, attribute: str = "model") -> dict[str, torch.Tensor]:
    """State dict of `lightning_module.<attribute>`, gathered from shards under FSDP (only rank 0 gets it).

    A collective call under sharded strategies: every rank must make it, before rank 0 saves.
    """
    prefix = f"{attribute}."
    state = trainer.strategy.lightning_module_state_dict()
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def resume_checkpoint(run_dir: Path) -> Path | None:
    path = run_dir / LAST_CHECKPOINT
    return path if path.is_file() else None


PRE_RESUME_METRICS = ".steerable/metrics.pre-resume.csv"


def set_aside_metrics(run_dir: Path) -> None:
    """Lightning's CSV logger deletes an existing metrics.csv; keep the interrupted run's rows for merging."""
    current = run_dir / "metrics.csv"
    if current.is_file():
        target = run_dir / PRE_RESUME_METRICS
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(current, target)


def restore_metrics(run_dir: Path) -> None:
    """Undo set_aside_metrics after a resume that failed: the interrupted run's rows come back as they were."""
    earlier = run_dir / PRE_RESUME_METRICS
    if earlier.is_file():
        os.replace(earlier, run_dir / "metrics.csv")


def merge_resumed_metrics(run_dir: Path, resumed_at_step: int) -> None:
    """metrics.csv = the interrupted run's rows before the resumed step + everything logged since."""
    earlier = run_dir / PRE_RESUME_METRICS
    current = run_dir / "metrics.csv"
    if not earlier.is_file():
        return
    with open(earlier, newline="") as handle:
        old_rows = [r for r in csv.DictReader(handle) if r.get("step") and int(r["step"]) < resumed_at_step]
    new_rows = []
    if current.is_file():
        with open(current, newline="") as handle:
            new_rows = list(csv.DictReader(handle))
    fields = sorted({k for row in old_rows + new_rows for k in row})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(old_rows + new_rows)
    write_text_atomic(current, buffer.getvalue())
    earlier.unlink()
