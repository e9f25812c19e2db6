"""The LightningModule for teacher-forced training of a causal LM (SFT and the methods built on it).

Checkpoints hold only trainable weights (the LoRA adapter), optimizer, scheduler, loop counters, the data
position and RNG state: a resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from transformers import get_scheduler

from steerable.budget import record_trained
from steerable.training.losses import summed_lm_loss
from steerable.training.sampler import ResumableSampler
from steerable.training.sharding import shard_model

log = logging.getLogger(__name__)


@dataclass
class OptimSettings:
    lr: float
    weight_decay: float = 0.0
    warmup_steps: int = 0
    scheduler: str = "cosine"
    total_steps: int = 100
    # (marker, scale): a parameter whose name contains the marker trains at lr x scale (CLP's shared adapter)
    lr_scales: tuple[tuple[str, float], ...] = ()


def parameter_groups(
    named: Iterable[tuple[str, torch.nn.Parameter]], lr: float, lr_scales: tuple[tuple[str, float], ...]
) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: the first marker a name contains sets its learning rate; the rest
    train at `lr`. Empty groups are left out, so the optimizer state has the same shape as before."""
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for name, param in named:
        scale = next((s for marker, s in lr_scales if marker in name), 1.0)
        groups.setdefault(lr * scale, []).append(param)
    return [{"params": params, "lr": group_lr} for group_lr, params in groups.items()]


class CausalLMModule(pl.LightningModule):
    """Losses are sums over items (target tokens, pairs, groups) divided by the *global* item count of the
    optimizer step: across data-parallel ranks and accumulated micro-batches. So 2 processes equal 1 process at
    the same global batch, and accumulation equals the large batch (a per-micro-batch mean would not)."""

    # False for modules whose training_step returns a loss that is already a mean over equally sized rank
    # batches (policy gradient): data parallelism then averages it into the global mean by itself.
    global_mean_loss = True

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
        self.strict_loading = False  # checkpoints carry trainable weights only (checked in fitting.py)
        self.model.train()  # from_pretrained returns eval mode; Lightning does not switch it back for fit
        self._step_started = 0.0
        self._window = torch.zeros(2, dtype=torch.float64)  # summed loss, item count since the last step
        self._val = torch.zeros(2, dtype=torch.float64)

    # ------------------------------------------------------------------ loss
    def loss_terms(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """(summed loss, number of items summed, extra metrics); here cross-entropy over target tokens."""
        total, count = summed_lm_loss(
            self.model, batch["input_ids"], batch["attention_mask"], batch["labels"]
        )
        return total, count, {}

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        """The micro-batch's own mean loss (for callers outside the training loop)."""
        total, count, extra = self.loss_terms(batch)
        return total / count.clamp_min(1), extra

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        total, count, extra = self.loss_terms(batch)
        self._window += torch.stack([total.detach().double().cpu(), count.detach().double().cpu()])
        size = batch["input_ids"].shape[0]
        for name, value in extra.items():
            self.log(f"train/{name}", value, batch_size=size, sync_dist=True)
        return total  # gradients are rescaled to the global mean in on_before_optimizer_step

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Turn the accumulated gradient of summed losses into the gradient of the global mean.

        Gradients here are Σ(summed losses) / (accumulate_grad_batches · world_size): Lightning divides each
        micro-batch by the accumulation factor and data parallelism averages over ranks."""
        if not (self.automatic_optimization and self.global_mean_loss):
            return
        loss_sum, count = self._reduced(self._window)
        self._window.zero_()
        scale = self.trainer.accumulate_grad_batches * self.trainer.world_size / max(count, 1.0)
        for p in self.trainer.model.parameters():
            if p.grad is not None:
                p.grad.mul_(scale)
        self.log("train/loss", loss_sum / max(count, 1.0), prog_bar=True, batch_size=1)

    def _reduced(self, pair: torch.Tensor) -> tuple[float, float]:
        """(sum, count) summed over every process."""
        total = self.trainer.strategy.reduce(pair.to(self.device, torch.float32), reduce_op="sum")
        return float(total[0]), float(total[1])

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._step_started = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Throughput over forward, backward and optimizer step: real (non-pad) tokens per second."""
        elapsed = max(time.perf_counter() - self._step_started, 1e-9)
        record_trained(batch["attention_mask"].sum())
        tokens_per_s = batch["attention_mask"].sum().float() / elapsed
        self.log("train/tokens_per_s", tokens_per_s, batch_size=1, sync_dist=True, reduce_fx="sum")

    def on_validation_epoch_start(self) -> None:
        self._val.zero_()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        total, count, extra = self.loss_terms(batch)
        self._val += torch.stack([total.detach().double().cpu(), count.detach().double().cpu()])
        size = batch["input_ids"].shape[0]
        for name, value in extra.items():
            self.log(f"val/{name}", value, sync_dist=True, batch_size=size)

    def on_validation_epoch_end(self) -> None:
        """Held-out loss over every process's shard of the validation set."""
        loss_sum, count = self._reduced(self._val)
        if count > 0:
            self.log(
                "val/loss", loss_sum / count, prog_bar=True, batch_size=1, sync_dist=True
            )  # equal on all ranks

    # ------------------------------------------------------------- optimizer
    def configure_optimizers(self) -> dict[str, Any]:
        # Parameters come from trainer.model so FSDP's flattened views are what the optimizer holds.
        named = [(n, p) for n, p in self.trainer.model.named_parameters() if p.requires_grad]
        if not named:
            raise RuntimeError("no trainable parameters: enable model.lora or full fine-tuning")
        groups = parameter_groups(named, self.optim.lr, self.optim.lr_scales)
        optimizer = torch.optim.AdamW(groups, lr=self.optim.lr, weight_decay=self.optim.weight_decay)
        scheduler = get_scheduler(
            "constant_with_warmup" if self.optim.scheduler == "constant" else self.optim.scheduler,
            optimizer,
            num_warmup_steps=self.optim.warmup_steps,
            num_training_steps=self.optim.total_steps,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_model(self) -> None:
        """Under hardware=fsdp (Lightning's ModelParallelStrategy) shard the model with FSDP2."""
        from lightning.pytorch.strategies import ModelParallelStrategy

        if isinstance(self.trainer.strategy, ModelParallelStrategy):
            shard_model(self.model, self.device_mesh["data_parallel"])

    # ------------------------------------------------------------ checkpoint
    def trainable_names(self) -> set[str]:
        return {name for name, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the trainable weights only; refuse to write a checkpoint that lacks any of them. Under FSDP
        only rank 0 holds the gathered weights (the one rank that writes)."""
        full = checkpoint["state_dict"]
        trainable = self.trainable_names()
        checkpoint["state_dict"] = {k: v for k, v in full.items() if k in trainable}
        if full or self.trainer.is_global_zero:
            check_trainable_state(checkpoint["state_dict"], trainable, "checkpoint")
        checkpoint["rng_state"] = {"torch_per_rank": self._gathered(torch.get_rng_state())}
        if self.device.type == "cuda":  # each rank's own GPU generator (dropout on the GPU)
            checkpoint["rng_state"]["cuda_per_rank"] = self._gathered(torch.cuda.get_rng_state(self.device))
        if self.sampler is not None:
            epoch_loop = self.trainer.fit_loop.epoch_loop
            checkpoint["data_position"] = {
                "epoch": self.trainer.current_epoch,
                "batches_in_epoch": epoch_loop.batch_progress.current.processed,
            }

    def _gathered(self, state: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's RNG state (ranks sample differently), gathered so rank 0 can save them all."""
        if self.trainer.world_size == 1:
            return [state]
        gathered = self.trainer.strategy.all_gather(state.to(self.device))
        return [row.cpu().clone() for row in gathered.view(self.trainer.world_size, -1)]  # own storage

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("rng_state")
        if rng is not None:
            states = rng.get("torch_per_rank") or [rng["torch"]]
            if len(states) != self.trainer.world_size:
                raise ValueError(
                    f"the checkpoint was written by {len(states)} process(es); resume it with as many "
                    f"(hardware.devices x hardware.num_nodes = {len(states)}), not {self.trainer.world_size}"
                )
            torch.set_rng_state(states[self.trainer.global_rank].to(torch.uint8).clone())
            cuda = rng.get("cuda_per_rank")
            if cuda is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(cuda[self.trainer.global_rank].to(torch.uint8).clone(), self.device)
        position = checkpoint.get("data_position")
        if position is not None and self.sampler is not None:
            self.sampler.set_epoch(position["epoch"])
            self.sampler.skip(position["batches_in_epoch"] * self.batch_size)


def check_trainable_state(state: dict[str, torch.Tensor], trainable: set[str], what: str) -> None:
    """A checkpoint or adapter must hold every trained weight: an empty or partial one would resume or load
    silently from nothing (the FSDP1 failure this project once had)."""
    missing = sorted(trainable - state.keys())
    if not state or missing:
        raise RuntimeError(
            f"refusing to write a {what} with {len(state)} of the {len(trainable)} trained weights"
            + (f" (missing e.g. {missing[:3]})" if missing else "")
        )
