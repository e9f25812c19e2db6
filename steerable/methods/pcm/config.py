"""The `method.*` keys of pcm: the schema Hydra validates its conf/method option against."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from steerable.config.base import ConfigError, choice_enum
from steerable.config.method import RecipeConfig
from steerable.config.sampling import SamplingConfig

# small: a random-init 2-layer LM on the base tokenizer | base: the base model + LoRA
ControllerKind = choice_enum("ControllerKind", ["small", "base"])


@dataclass
class PCMEvalSettings:
    num_prompts: int = 8  # held-out prompts, each under every composite preference
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(max_new_tokens=48, do_sample=True)
    )
    bootstrap: int = 1000


@dataclass
class PCMConfig(RecipeConfig):
    """PCM: frozen per-side LoRA experts merged token by token with weights from a learned controller (REBEL).

    `dimensions` items are "name:low_side:high_side"; `name` is both a reward source of the run (the measured
    attribute, higher = the high side) and a label of the data (to pick each side's expert training data)."""

    name: str = "pcm"
    dimensions: list[str] = field(  # name:low_side:high_side
        default_factory=lambda: ["verbosity:concise:detailed", "positivity:unfriendly:friendly"]
    )
    experts: str | None = None  # a pcm run folder whose experts to reuse
    expert_steps: int | None = None  # SFT steps per expert; null = trainer.max_steps
    expert_lr: float = 2e-4
    low_side_max: float = 1.0  # data label <= this trains the low side's expert
    high_side_min: float = 3.0  # data label >= this trains the high side's expert
    controller: ControllerKind = ControllerKind["small"]
    controller_hidden: int = 128
    lr: float = 1e-3  # controller
    batch_size: int = 4  # (prompt, preference) pairs per REBEL step, two responses each
    epochs: int = 2  # optimisation passes over each batch of cached samples
    eta: float = 1.0
    bt_beta: float = 1.0
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(max_new_tokens=48, do_sample=True)
    )
    eval: PCMEvalSettings = field(default_factory=PCMEvalSettings)

    def __post_init__(self) -> None:
        super().__post_init__()
        for item in self.dimensions:
            if len(item.split(":")) != 3 or not all(item.split(":")):
                raise ConfigError(f"method.dimensions: {item!r} must be name:low_side:high_side")
        sides = [s for item in self.dimensions for s in item.split(":")[1:]]
        if len(set(sides)) != len(sides):
            raise ConfigError(f"method.dimensions: side names must be unique, got {sides}")


def check(cfg: Any) -> None:
    """Each dimension is scored by the reward source of its name; missing ones fail before any expert trains."""
    if not {"experts", "pcm"} & set(cfg.method.stages):
        return
    names = [item.split(":")[0] for item in cfg.method.dimensions]
    missing = [n for n in names if n not in cfg.reward]
    if missing:
        raise ConfigError(
            f"method=pcm scores each dimension with the reward source of its name: {missing} missing "
            f"from reward=; add reward=[{','.join(names)}] (or change method.dimensions)"
        )
