"""The training run every trained stage shares: loaders, optimizer settings, resume, fit, gathered weights."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from steerable.backbone.adapters import count_parameters
from steerable.evaluation.plots import plot_series
from steerable.methods.base import RunContext
from steerable.report import Report
from steerable.run_dir import RunDirError
from steerable.training.diagnostics import PREFIX as DIAGNOSTICS_PREFIX
from steerable.training.lm_module import CausalLMModule, OptimSettings, check_trainable_state
from steerable.training.online import OnlineModule
from steerable.training.sampler import ResumableSampler, ShardByRank, make_loader, shuffled_loader
from steerable.training.sharding import is_sharded
from steerable.training.trainer import (
    RunRecord,
    build_trainer,
    gathered_state_dict,
    merge_resumed_metrics,
    restore_metrics,
    resume_checkpoint,
    set_aside_metrics,
)

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    steps: int
    metrics: dict[str, float]
    seconds: float
    trainable_params: int
    frozen_params: int
    is_global_zero: bool
    val_loss_before: float | None = None
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)  # gathered (rank 0)
    resumed_from: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "train_loss": self.metrics.get("train/loss"),
            "val_loss_before": self.val_loss_before,
            "val_loss": self.metrics.get("val/loss"),
            "fit_seconds": round(self.seconds, 1),
            "trainable_params": self.trainable_params,
            "frozen_params": self.frozen_params,
            "resumed_from": self.resumed_from,
        }


def optim_settings(ctx: RunContext) -> OptimSettings:
    method = ctx.cfg.method
    return OptimSettings(
        lr=method.lr,
        weight_decay=method.weight_decay,
        warmup_steps=method.warmup_steps,
        scheduler=method.scheduler,
        total_steps=ctx.cfg.trainer.max_steps,
    )


def build_loaders(
    ctx: RunContext, train_set: Sequence, val_set: Sequence, collate: Callable
) -> tuple[ResumableSampler, DataLoader, DataLoader | None]:
    """Shuffled, resumable training batches and ordered held-out batches of the method's sizes."""
    cfg, method = ctx.cfg, ctx.cfg.method
    sampler, train_loader = shuffled_loader(
        train_set, method.batch_size, collate, seed=cfg.seed, num_workers=cfg.data.num_workers
    )
    val_loader = (
        make_loader(
            val_set,
            method.eval_batch_size,
            collate,
            sampler=ResumableSampler(len(val_set), seed=cfg.seed, shuffle=False, even=False),
            seed=cfg.seed,
        )
        if val_set
        else None
    )
    return sampler, train_loader, val_loader


class UnreadableCheckpoint(RunDirError):
    pass


def check_resume_checkpoint(path: Path, module: CausalLMModule) -> int:
    """The step a checkpoint resumes from, after checking it holds every weight this model trains (Lightning
    loads it non-strictly, since it carries trainable weights only, so a partial one would pass silently)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        step = int(checkpoint["global_step"])
    except Exception as err:  # truncated, not a checkpoint, or a pickle we refuse to run
        reason = str(err).splitlines()[0][:200]
        if "Weights only load failed" in reason:  # torch's hint to unpickle it is not advice we give
            reason = "it holds pickled Python objects, which are never loaded (they could run code)"
        raise UnreadableCheckpoint(f"cannot read the checkpoint {path}: {reason}") from None
    saved, trainable = set(checkpoint.get("state_dict", {})), module.trainable_names()
    if saved != trainable:
        raise RunDirError(
            f"checkpoint {path} holds {len(saved & trainable)} of the {len(trainable)} weights this run trains"
            f" ({len(saved - trainable)} unknown): it was written by a different model or configuration"
        )
    return step


def intact_resume_checkpoint(run_dir: Path, module: CausalLMModule) -> tuple[Path, int] | None:
    """checkpoints/last.ckpt, or when it cannot be read (a crash while the file system wrote it, a disk that
    filled up), the newest step-*.ckpt that can, with a warning. None when the run has no checkpoint."""
    last = resume_checkpoint(run_dir)
    candidates = ([last] if last else []) + sorted(
        (run_dir / "checkpoints").glob("step-*.ckpt"), reverse=True
    )
    problems = []
    for path in candidates:
        try:
            step = check_resume_checkpoint(path, module)
        except UnreadableCheckpoint as err:
            problems.append(str(err))
            continue
        for problem in problems:
            log.warning("%s; resuming from %s (step %d) instead", problem, path.name, step)
        return path, step
    if problems:
        raise RunDirError(
            f"no readable checkpoint to resume from in {run_dir / 'checkpoints'}: {problems[0]}"
        )
    return None


def resumable_samplers(*loaders: DataLoader | None) -> list[ResumableSampler]:
    """The loaders' samplers that carry a position to resume from (and to shard by rank)."""
    return [
        loader.sampler
        for loader in loaders
        if loader is not None and isinstance(loader.sampler, ResumableSampler)
    ]


def validation_loss(trainer: Any, module: CausalLMModule, val_loader: DataLoader) -> float | None:
    """Held-out loss before training (None when validation is switched off)."""
    measured = trainer.validate(module, val_loader, verbose=False)  # [] with limit_val_batches=0
    module.train()  # validate() leaves modules in eval mode, which would switch dropout off in fit
    return measured[0].get("val/loss") if measured else None


def fit_module(
    ctx: RunContext,
    module: CausalLMModule,
    train_loader: DataLoader,
    val_loader: DataLoader | None,
    validate_first: bool = False,
) -> FitResult:
    """Fit (resuming from checkpoints/last.ckpt when asked), optionally measuring held-out loss first.
    An online module maps `trainer.*` (rounds) onto Lightning's steps itself (`OnlineModule`)."""
    cfg, overrides = ctx.cfg, None
    if isinstance(module, OnlineModule):
        cfg = replace(cfg, trainer=module.trainer_config(cfg.trainer))
        overrides = module.trainer_arguments()
    found = intact_resume_checkpoint(ctx.run_dir, module) if ctx.resuming else None
    checkpoint, resumed_at = found if found is not None else (None, 0)
    if checkpoint is not None:
        set_aside_metrics(ctx.run_dir)
    samplers = resumable_samplers(train_loader, val_loader)
    record = RunRecord(
        cfg.logger, ctx.run_dir, f"{cfg.task_name}/{ctx.run_dir.name}", ctx.hparams(module.model)
    )
    trainer = build_trainer(
        cfg.trainer, cfg.hardware, record, [ShardByRank(samplers), *ctx.callbacks], overrides=overrides
    )
    val_before = None
    if validate_first and checkpoint is None and val_loader is not None:
        val_before = validation_loss(trainer, module, val_loader)
    started = time.perf_counter()
    try:
        trainer.fit(module, train_loader, val_loader, ckpt_path=str(checkpoint) if checkpoint else None)
    except BaseException:
        if checkpoint is not None and trainer.is_global_zero:
            restore_metrics(ctx.run_dir)  # a failed resume leaves the interrupted run's metrics as they were
        raise
    seconds = time.perf_counter() - started
    if checkpoint is not None and trainer.is_global_zero:
        merge_resumed_metrics(ctx.run_dir, resumed_at)
    counts = count_parameters(module.model)
    state_dict = gathered_state_dict(trainer)
    if trainer.is_global_zero:
        check_trainable_state(state_dict, {n[len("model.") :] for n in module.trainable_names()}, "model")
    if is_sharded(module.model):
        ctx.drop_sharded_model()
    return FitResult(
        steps=trainer.global_step,
        metrics={k: float(v) for k, v in trainer.callback_metrics.items()},
        seconds=seconds,
        trainable_params=counts.trainable,
        frozen_params=counts.frozen,
        is_global_zero=trainer.is_global_zero,
        val_loss_before=val_before,
        state_dict=state_dict,
        resumed_from=str(checkpoint) if checkpoint else None,
    )


# ------------------------------------------------------------------------------------------ diagnostics


def plot_history(history: Sequence[dict[str, float]], folder: Path) -> list[tuple[str, Path]]:
    """One figure per family of diagnostics over training steps: (caption, file)."""
    keys = sorted({k for row in history for k in row if k.startswith(DIAGNOSTICS_PREFIX + "/")})
    steps = list(range(1, len(history) + 1))
    families: dict[str, list[str]] = {}
    for key in keys:  # diag/w_<name>/... by weighting group, the rest by the first word of their name
        part = key.split("/")[1]
        families.setdefault(part if part.startswith("w_") else part.split("_")[0], []).append(key)
    for family in [f for f, members in families.items() if len(members) == 1 and not f.startswith("w_")]:
        families.setdefault("other", []).extend(families.pop(family))
    figures = []
    for family, members in families.items():
        series = {k.split("/")[-1]: [row.get(k, math.nan) for row in history] for k in members}
        title = f"rows weighted mostly on {family[2:]}" if family.startswith("w_") else family
        path = plot_series(steps, series, folder / f"{family}.png", ylabel="value", title=title)
        figures.append((title, path))
    return figures


def write_diagnostics(
    history: Sequence[dict[str, float]], run_dir: Path, title: str, about: str
) -> Path | None:
    """`diagnostics.md` in the run folder: the plots of `history` (one dict of logged values per step)."""
    if not history:  # a resumed run that had nothing left to do
        return None
    folder = run_dir / "diagnostics"
    folder.mkdir(exist_ok=True)
    report = Report(title).section("Training diagnostics", about)
    for caption, path in plot_history(history, folder):
        report.image(path, run_dir, caption)
    last = {k: v for k, v in history[-1].items() if k.startswith(DIAGNOSTICS_PREFIX + "/")}
    report.section("Last step").table(["", "value"], [[k, v] for k, v in sorted(last.items())])
    return report.write(run_dir / "diagnostics.md")
