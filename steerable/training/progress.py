"""Progress a person can see: plain log lines when output goes to a file or a pipe (Lightning's bar only
prints when it finishes there), and console output free of duplicated lines and third-party noise."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import lightning.pytorch as pl

from steerable.console import quiet_libraries

log = logging.getLogger("steerable.progress")


class PlainProgress(pl.Callback):
    """`step k/N  loss x  tokens/s y  ETA m:ss` at most every `every_s` seconds, and at the last step."""

    def __init__(self, every_s: float = 30.0) -> None:
        self.every_s = every_s
        self._started = 0.0
        self._last = 0.0
        self._first_step = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = self._last = time.monotonic()
        self._first_step = trainer.global_step
        if trainer.is_global_zero:
            log.info("training: step %d/%d", trainer.global_step, total_steps(trainer))

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now, step, total = time.monotonic(), trainer.global_step, total_steps(trainer)
        first = step == self._first_step + 1
        if not trainer.is_global_zero or (now - self._last < self.every_s and step < total and not first):
            return
        self._last = now
        done = max(step - self._first_step, 1)
        eta = (now - self._started) / done * max(total - step, 0)
        metrics = trainer.callback_metrics
        parts = [f"step {step}/{total}"]
        for key, label in (("train/loss", "loss"), ("train/tokens_per_s", "tokens/s")):
            if key in metrics:
                parts.append(f"{label} {float(metrics[key]):.4g}")
        parts.append(f"ETA {int(eta // 60)}:{int(eta % 60):02d}")
        log.info("  ".join(parts))


def total_steps(trainer: pl.Trainer) -> int:
    """The run's optimizer steps: max_steps, or for a one-pass loop (max_steps=-1) its epoch's length."""
    if trainer.max_steps > 0:
        return trainer.max_steps
    return int(trainer.estimated_stepping_batches)


def console_is_terminal() -> bool:
    return sys.stdout.isatty()


class _DropNoise(logging.Filter):
    NOISE = ("litlogger", "LitLogger")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n in record.getMessage() for n in self.NOISE)


def quiet_third_party() -> None:
    """One copy of each Lightning line (through our log handlers, so they also reach the run's log file), no
    advertisements, no deprecation warnings from libraries the user cannot act on. Our own warnings stay."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropNoise())  # logger filters apply where a record is made
    quiet_libraries()
