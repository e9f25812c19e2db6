"""The `method.*` keys every method shares; each method's own config (steerable/methods/<name>/config.py)
extends one of these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from steerable.config.base import ConfigError, at_least, choice_enum

Scheduler = choice_enum("Scheduler", ["constant", "linear", "cosine"])


@dataclass
class MethodConfig:
    name: str = MISSING
    stages: list[str] | None = None  # the stages to run, in order; null = every stage of the method


@dataclass
class RecipeConfig(MethodConfig):
    """Optimisation settings every trained method shares."""

    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    scheduler: Scheduler = Scheduler["cosine"]  # learning-rate shape after warm-up
    batch_size: int = 4
    eval_batch_size: int = 8

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"method.lr must be positive, got {self.lr}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError("method.batch_size and method.eval_batch_size must be at least 1")
        at_least("method.weight_decay", self.weight_decay, 0)
        at_least("method.warmup_steps", self.warmup_steps, 0)


@dataclass
class WarmStartSettings:
    """An SFT warm start on the data's replies before an online method (its warm_start stage): the reference
    policy these methods' papers start RL from is an SFT model. steps=0 (default) starts from the base as it is."""

    steps: int = 0
    lr: float = 2e-3
    batch_size: int = 2
    warmup_steps: int = 5

    def __post_init__(self) -> None:
        at_least("method.warm_start.steps", self.steps, 0)
        at_least("method.warm_start.lr", self.lr, 0, strictly=True)
        at_least("method.warm_start.batch_size", self.batch_size, 1)
        at_least("method.warm_start.warmup_steps", self.warmup_steps, 0)


def chosen_objectives(cfg: Any) -> list[str]:
    """The reward sources a multi-objective method optimises, in order: `method.objectives`, else every
    configured source; a name that is not a source is one line naming both."""
    names = list(cfg.method.objectives) or list(cfg.reward)
    missing = [n for n in names if n not in cfg.reward]
    if missing:
        raise ConfigError(
            f"method.objectives {missing} are not reward sources of this run (reward={list(cfg.reward)})"
        )
    return names
