"""The LightningModule for teacher-forced training of a causal LM (SFT and the methods built on it).

Checkpoints hold only trainable weights (the LoRA adapter), optimizer, scheduler, loop counters, the data
position and RNG state: a resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from transformers import get_scheduler

from steerable.training.losses import masked_lm_loss
from steerable.training.sampler import ResumableSampler

log = logging.getLogger(__name__)


@dataclass
class OptimSettings:
    lr: float
    weight_decay: float = 0.0
    warmup_steps: int = 0
    scheduler: str = "cosine"
    total_steps: int = 100


class CausalLMModule(pl.LightningModule):
    def __init__(
        self,
        model: torch.nn.Module,
        optim: OptimSettings,
        sampler: ResumableSampler | None = None,
        batch_size: int = 1,
    ):
        super().__init__()
        self.model = model
        self.optim = optim
        self.sampler = sampler
        self.batch_size = batch_size  # per-process micro-batch; turns batches consumed into examples to skip
        self.strict_loading = False  # checkpoints carry trainable weights only
        self.model.train()  # from_pretrained returns eval mode; Lightning does not switch it back for fit
        self._step_started = 0.0

    # ------------------------------------------------------------------ loss
    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean cross-entropy over target tokens (labels != -100) of the micro-batch."""
        return masked_lm_loss(self.model, batch["input_ids"], batch["attention_mask"], batch["labels"]), {}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, extra = self.compute_loss(batch)
        size = batch["input_ids"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        for name, value in extra.items():
            self.log(f"train/{name}", value, batch_size=size)
        return loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._step_started = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Throughput over forward, backward and optimizer step: real (non-pad) tokens per second."""
        elapsed = max(time.perf_counter() - self._step_started, 1e-9)
        self.log("train/tokens_per_s", batch["attention_mask"].sum().float() / elapsed, batch_size=1)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, extra = self.compute_loss(batch)
        size = batch["input_ids"].shape[0]
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=size)
        for name, value in extra.items():
            self.log(f"val/{name}", value, sync_dist=True, batch_size=size)
        return loss

    # ------------------------------------------------------------- optimizer
    def configure_optimizers(self) -> dict[str, Any]:
        # Parameters come from trainer.model so FSDP's flattened views are what the optimizer holds.
        params = [p for p in self.trainer.model.parameters() if p.requires_grad]
        if not params:
            raise RuntimeError("no trainable parameters: enable model.lora or full fine-tuning")
        optimizer = torch.optim.AdamW(params, lr=self.optim.lr, weight_decay=self.optim.weight_decay)
        scheduler = get_scheduler(
            "constant_with_warmup" if self.optim.scheduler == "constant" else self.optim.scheduler,
            optimizer,
            num_warmup_steps=self.optim.warmup_steps,
            num_training_steps=self.optim.total_steps,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Lightning's FSDP precision plugin cannot clip by norm, and its FSDP units are not a single root
        whose clip_grad_norm_ could be used: under FSDP gradients are left unclipped (warned once)."""
        from lightning.pytorch.strategies import FSDPStrategy

        if gradient_clip_val and isinstance(self.trainer.strategy, FSDPStrategy):
            if not getattr(self, "_warned_fsdp_clip", False):
                log.warning("trainer.gradient_clip_val=%s is not applied under FSDP", gradient_clip_val)
                self._warned_fsdp_clip = True
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    # ------------------------------------------------------------ checkpoint
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        checkpoint["rng_state"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_state"]["cuda"] = torch.cuda.get_rng_state_all()
        if self.sampler is not None:
            epoch_loop = self.trainer.fit_loop.epoch_loop
            checkpoint["data_position"] = {
                "epoch": self.trainer.current_epoch,
                "batches_in_epoch": epoch_loop.batch_progress.current.processed,
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("rng_state")
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
        position = checkpoint.get("data_position")
        if position is not None and self.sampler is not None:
            self.sampler.set_epoch(position["epoch"])
            self.sampler.skip(position["batches_in_epoch"] * self.batch_size)
