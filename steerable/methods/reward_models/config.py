"""The `method.*` keys of reward_models: the schema Hydra validates its conf/method option against."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from steerable.config.base import ConfigError, choice_enum
from steerable.config.method import RecipeConfig
from steerable.methods.registry import needs_responses

# last: the hidden state of the final token | mean: the masked mean over real tokens
Pooling = choice_enum("Pooling", ["last", "mean"])


@dataclass
class ScoringConfig(RecipeConfig):
    """A backbone with a linear head on one pooled hidden state (reward and attribute models)."""

    lr: float = 1e-4
    pooling: Pooling = Pooling["last"]


@dataclass
class RewardModelConfig(ScoringConfig):
    """Bradley–Terry reward model: scalar head, loss -log σ(r_chosen - r_rejected - margin)."""

    name: str = "reward_model"
    margin: float = 0.0  # a constant margin in the loss (0 = plain Bradley–Terry)


@dataclass
class AttributeModelConfig(ScoringConfig):
    """SteerLM's attribute prediction model: one regression output per attribute, -100 labels masked."""

    name: str = "attribute_model"
    attributes: list[str] = field(default_factory=list)  # empty = every attribute found in the data
    value_range: list[float] = field(default_factory=lambda: [0.0, 4.0])

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.value_range) != 2 or self.value_range[0] >= self.value_range[1]:
            raise ConfigError(
                f"method.value_range must be [low, high] with low < high, got {self.value_range}"
            )


def check_reward_model(cfg: Any) -> None:
    if cfg.data.format not in ("hh-rlhf", "jsonl"):
        raise ConfigError(
            f"method=reward_model needs preference pairs (data=hh-rlhf), got data={cfg.data.name}"
        )


def check_attribute_model(cfg: Any) -> None:
    needs_responses(cfg)
    if cfg.data.format == "hh-rlhf":
        raise ConfigError("method=attribute_model needs attribute labels (data=oasst1, helpsteer2, demo)")
