"""The base of sample -> score -> update loops (SuperHF, policy gradient for CLP/RL, PCM's REBEL).

One training step is one *round*: a batch of prompts is sampled from the current policy, scored, and the
module takes its optimizer updates on the result. Lightning counts optimizer updates as steps, so a module
whose round makes several updates, or that runs one pass over its prompts, says so here and `fit_module`
maps `trainer.*` (which counts rounds) onto Lightning; stages pass no trainer overrides of their own.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from steerable.config.schema import TrainerConfig
from steerable.training.lm_module import CausalLMModule


class OnlineModule(CausalLMModule):
    updates_per_round: int = 1  # optimizer updates per round (PCM: `method.epochs` REBEL updates)
    one_pass: bool = (
        False  # a run is one pass over its prompts; trainer.max_steps does not bound it (SuperHF)
    )

    def trainer_config(self, trainer: TrainerConfig) -> TrainerConfig:
        """`trainer.*` in Lightning's units: max_steps and the checkpoint interval count rounds."""
        k = self.updates_per_round
        if k == 1:
            return trainer
        return replace(
            trainer,
            max_steps=trainer.max_steps * k,
            checkpoint_every_n_steps=trainer.checkpoint_every_n_steps * k,
        )

    def trainer_arguments(self) -> dict[str, Any]:
        """Lightning Trainer arguments this kind of loop needs, over those built from `trainer.*`."""
        arguments: dict[str, Any] = {}
        if self.one_pass:
            arguments.update(max_steps=-1, max_epochs=1)
        if not self.automatic_optimization:  # the step clips, if at all (Lightning refuses to)
            arguments.update(gradient_clip_val=None)
        return arguments

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """A round's wall time (sampling dominates it, so a token throughput would mislead)."""
        seconds = time.perf_counter() - self._step_started
        self.log("train/round_seconds", seconds, batch_size=1, rank_zero_only=True)
