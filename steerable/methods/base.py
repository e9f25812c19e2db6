"""What every method's stages share: the composed config, the run folder, and one lazily loaded backbone."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from transformers import PreTrainedTokenizerBase

from steerable.backbone import load_backbone
from steerable.backbone.adapters import count_parameters
from steerable.config.schema import ModelConfig, TrainConfig
from steerable.hardware import inference_autocast
from steerable.policies.runs import (
    FINAL_MODEL_DIR,
    run_config,
    run_model_config,
    with_warm_start,
)

log = logging.getLogger(__name__)

__all__ = ["FINAL_MODEL_DIR", "RunContext", "run_config", "run_model_config", "sub_context"]


@dataclass
class RunContext:
    cfg: TrainConfig
    run_dir: Path
    resuming: bool = False
    callbacks: list = field(default_factory=list)  # extra Lightning callbacks (tests, profiling)
    _backbone: tuple[torch.nn.Module, PreTrainedTokenizerBase] | None = field(default=None, repr=False)
    _sharded_fit: bool = field(default=False, repr=False)

    def drop_sharded_model(self) -> None:
        """After an FSDP fit the live model is sharded across processes; later stages (eval, reports, the
        next stage's fit) load the gathered weights from checkpoints/final instead."""
        self._backbone, self._sharded_fit = None, True

    def model_config(self) -> ModelConfig:
        """The base this run's stages start from: `cfg.model`, warm-started once its warm_start stage ran."""
        return with_warm_start(self.cfg.model, self.run_dir)

    def backbone(self) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
        """The model being trained in this process (fresh LoRA on the configured base)."""
        if self._backbone is None:
            self._backbone = load_backbone(self.model_config())
        return self._backbone

    def trained_model(self) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
        """The trained model: still in memory when training ran in this process, else loaded from disk."""
        if self._backbone is not None:
            return self._backbone
        if self._sharded_fit and torch.distributed.is_initialized():
            torch.distributed.barrier()  # rank 0 writes checkpoints/final after the fit; wait for it
        final = self.run_dir / FINAL_MODEL_DIR
        if not final.is_dir():
            raise FileNotFoundError(f"{final} is missing: run the train stage first")
        self._backbone = load_backbone(self.model_config(), adapter_dir=final)
        return self._backbone

    @property
    def device(self) -> torch.device:
        """Where inference of this run happens (training placement is Lightning's)."""
        gpu = self.cfg.hardware.accelerator == "gpu" and torch.cuda.is_available()
        return torch.device("cuda" if gpu else "cpu")

    def autocast(self) -> AbstractContextManager:
        """bf16 autocast for inference when the run trains in bf16 (CPUs with bf16 units gain ~2.5x)."""
        return inference_autocast(self.cfg.hardware)

    def hparams(self, model: torch.nn.Module) -> dict[str, Any]:
        counts = count_parameters(model)
        config = OmegaConf.to_container(OmegaConf.structured(self.cfg), resolve=True, enum_to_str=True)
        return {
            **config,
            "params/trainable": counts.trainable,
            "params/frozen": counts.frozen,
            "params/trainable_fraction": counts.trainable / max(counts.total, 1),
        }


def sub_context(ctx: RunContext, folder: str, method: Any = None, max_steps: int | None = None) -> RunContext:
    """A stage's own training run: its folder holds checkpoints/, metrics.csv and checkpoints/final."""
    trainer = replace(ctx.cfg.trainer, max_steps=max_steps or ctx.cfg.trainer.max_steps)
    cfg = replace(ctx.cfg, method=method or ctx.cfg.method, trainer=trainer)
    return RunContext(cfg=cfg, run_dir=ctx.run_dir / folder, resuming=ctx.resuming, callbacks=ctx.callbacks)
