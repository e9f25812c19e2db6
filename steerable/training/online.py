"""The base of sample -> score -> update loops (SuperHF, policy gradient for CLP/RL, PCM's REBEL).

One training step is one *round*: a batch of prompts is sampled from the current policy, scored, and the
module takes its optimizer updates on the result. Lightning counts optimizer updates as steps, so a module
whose round makes several updates, or that runs one pass over its prompts, says so here and `fit_module`
maps `trainer.*` (which counts rounds) onto Lightning; stages pass no trainer overrides of their own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import torch

from steerable.config.schema import TrainerConfig
from steerable.training.lm_module import CausalLMModule
from steerable.training.sampler import ResumableSampler


@dataclass
class PromptFeed:
    """Where a loop's rounds take their prompts from: the resumable sampler of the run's prompt loader (what a
    checkpoint records; None for a loader without one) and how many prompts one round takes on this process."""

    sampler: ResumableSampler | None = None
    per_round: int = 1


class OnlineModule(CausalLMModule):
    updates_per_round: int = 1  # optimizer updates per round (PCM: `method.epochs` REBEL updates)
    one_pass: bool = (
        False  # a run is one pass over its prompts; trainer.max_steps does not bound it (SuperHF)
    )
    frozen_names: tuple[str, ...] = ()  # submodules held by `hold_frozen`

    def hold_frozen(self, name: str, model: torch.nn.Module) -> None:
        """Hold a model the loop reads but never trains (a full fine-tuning reference, PCM's experts) as the
        submodule `name`: Lightning moves it with the policy (device, precision), while it stays frozen, in
        eval mode through Lightning's `train()`, and out of `state_dict()`, so out of checkpoints."""
        model.requires_grad_(False)
        model.eval()
        self.add_module(name, model)
        if not self.frozen_names:
            self.register_state_dict_post_hook(_drop_frozen)
        self.frozen_names = (*self.frozen_names, name)

    def trainable_names(self) -> set[str]:
        """What checkpoints must hold: never a held model, even where PEFT's `set_adapter` (the mixer's)
        switched `requires_grad` back on for its active adapters."""
        held = tuple(f"{name}." for name in self.frozen_names)
        return {name for name in super().trainable_names() if not name.startswith(held)}

    def configure_optimizers(self) -> dict[str, Any]:
        for name in self.frozen_names:  # frozen again, for the same reason
            getattr(self, name).requires_grad_(False)
        return super().configure_optimizers()

    def train(self, mode: bool = True) -> OnlineModule:
        super().train(mode)
        for name in self.frozen_names:
            getattr(self, name).eval()  # no dropout in a reference or an expert
        return self

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


def _drop_frozen(module: OnlineModule, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """state_dict post-hook: the frozen models' weights are the base model's or a saved stage's, never saved."""
    held = tuple(f"{prefix}{name}." for name in module.frozen_names)
    for key in [k for k in state if k.startswith(held)]:
        del state[key]
