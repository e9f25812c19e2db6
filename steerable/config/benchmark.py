"""A steerability benchmark suite (`benchmark=<suite>`, conf/benchmark/): the objectives that conflict, the
request grid, the prompts and sampling of the evaluation, the hypervolume reference point and the training
budget every arm gets. A training run that is an arm of the suite carries it (with `benchmark.arm` naming the
arm), so `steerable-eval eval=leaderboard` on the multirun folder finds the suite in the runs themselves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from steerable.config.base import ConfigError, at_least
from steerable.config.sampling import SamplingConfig


@dataclass
class ObjectiveConfig:
    """One axis of the suite. `reward`: the reward spec that scores it (`type` + the scorer's arguments, as in
    conf/reward). `attribute` / `direction` / `instruction`: what it means for policies steered by data labels
    (SteerLM, PCM: more of `attribute` scores higher when direction=1, less when -1) or by words (prompting)."""

    reward: dict[str, Any] = field(default_factory=dict)
    attribute: str | None = None
    direction: int = 1
    instruction: str = ""


@dataclass
class BudgetConfig:
    """What every arm may spend on training, in the units the runs record (each stage summary's `cost`); an arm
    over budget is flagged on the leaderboard, not silently compared."""

    samples: int = 0  # replies generated during training (0 = not limited)
    tokens: int = 0  # tokens through a training forward and backward (0 = not limited)
    minutes: float = 0.0  # training wall time (0 = not limited)


@dataclass
class BenchmarkConfig:
    name: str = MISSING
    arm: str | None = None  # the arm this run is (set by conf/arm/<suite>_<arm>.yaml); null = not an arm
    arms: list[str] = field(default_factory=list)  # every arm of the suite, so a missing one is reported
    objectives: dict[str, ObjectiveConfig] = field(default_factory=dict)  # axes, in order
    grid_step: float = 0.25  # requests: every weighting on the simplex whose weights are multiples of this
    default: dict[str, float] | None = None  # the default request; null = uniform weights
    reference: list[float] = field(default_factory=list)  # hypervolume reference, one value per objective
    num_prompts: int = 12  # held-out prompts every request is answered on
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(max_new_tokens=48, temperature=0.7, top_p=0.9)
    )
    batch_size: int = 16
    bootstrap: int = 1000  # resamples of the prompts for every confidence interval
    budget: BudgetConfig = field(default_factory=BudgetConfig)

    def __post_init__(self) -> None:
        names = list(self.objectives)
        if len(names) < 2:
            raise ConfigError(f"benchmark={self.name}: a suite needs at least 2 objectives, got {names}")
        if len(self.reference) != len(names):
            raise ConfigError(
                f"benchmark.reference={list(self.reference)} needs one value per objective {names}"
            )
        steps = 1 / self.grid_step if self.grid_step > 0 else 0.5
        if not (0 < self.grid_step <= 1 and abs(steps - round(steps)) < 1e-9):
            raise ConfigError(f"benchmark.grid_step={self.grid_step} must divide 1 (e.g. 0.25)")
        for name, objective in self.objectives.items():
            if objective.direction not in (-1, 1):
                raise ConfigError(f"benchmark.objectives.{name}.direction must be 1 or -1")
            if "type" not in objective.reward:
                raise ConfigError(f"benchmark.objectives.{name}.reward needs a reward spec with a type")
        if self.default is not None and set(self.default) != set(names):
            raise ConfigError(f"benchmark.default={dict(self.default)} must weigh exactly {names}")
        for key in ("num_prompts", "batch_size", "bootstrap"):
            at_least(f"benchmark.{key}", getattr(self, key), 1)
