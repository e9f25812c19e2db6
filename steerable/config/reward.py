"""Typed reward specs: `reward.<name>` of a run, one conf/reward option (or command-line node) per source.

A spec is a registered scorer `type` (steerable/rewards/base.py maps it to a "module:Class") plus that scorer's
keyword arguments. Each built-in type has its own dataclass, which a conf/reward file extends through its
defaults list (`/reward_schema_<kind>@_here_`), so a misspelt key or a wrong value type fails at composition naming
`reward.<name>.<key>`. The defaults are the scorer constructors' own; tests/test_config_defaults.py checks that
they stay equal. A type registered at run time (`register_reward_type`) has no schema here: its source is a plain
`RewardSpec` whose arguments go in `args`, passed on unchecked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING

from steerable.config.base import ConfigError, choice_enum

LengthUnit = choice_enum("LengthUnit", ["words", "tokens"])
# How an HF classifier reads a (prompt, response) pair: pair = two text inputs | concat = prompt + separator +
# response as one text | chat = the tokenizer's chat template over both turns.
PromptFormat = choice_enum("PromptFormat", ["pair", "concat", "chat"])
Activation = choice_enum("Activation", ["none", "sigmoid", "softmax"])  # applied to the classifier's logits


@dataclass
class RewardSpec:
    """A reward source: a registered scorer `type` and its keyword arguments."""

    TYPES: ClassVar[tuple[str, ...]] = ()  # the types this schema describes; () = any (a plain spec)

    type: str = MISSING
    # keyword arguments of a type without its own schema below (one registered at run time), passed as they are
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class LengthSpec(RewardSpec):
    """Response length (steerable.rewards.programmatic.LengthScorer)."""

    TYPES: ClassVar[tuple[str, ...]] = ("length",)

    type: str = "length"
    unit: LengthUnit = LengthUnit["words"]
    tokenizer: str | None = None  # unit=tokens: a tokenizer name or folder
    log_scale: bool = False  # log1p(n): 10 -> 20 words counts as much as 100 -> 200
    target: float | None = None  # score -|f(n) - f(target)| (0 at the target) instead of f(n)
    empty: float | None = None  # the score of a reply with no words (None: the formula's, e.g. 0 = the best)
    name: str = "length"  # the output's name (in a stack a one-output source is named by its key)


@dataclass
class ReadabilitySpec(RewardSpec):
    """Readability formulas (steerable.rewards.programmatic.ReadabilityScorer)."""

    TYPES: ClassVar[tuple[str, ...]] = ("readability",)

    type: str = "readability"
    # flesch_reading_ease | flesch_kincaid_grade, one output each
    metrics: list[str] = field(default_factory=lambda: ["flesch_reading_ease"])
    empty_value: float = 0.0  # the score of a response without words


@dataclass
class SentimentSpec(RewardSpec):
    """VADER sentiment (steerable.rewards.programmatic.SentimentScorer)."""

    TYPES: ClassVar[tuple[str, ...]] = ("sentiment", "vader")

    type: str = "sentiment"
    outputs: list[str] = field(default_factory=lambda: ["compound"])  # of compound, pos, neu, neg


@dataclass
class ClassifierSpec(RewardSpec):
    """Any transformers sequence classifier (steerable.rewards.hf_classifier.HFSequenceClassifierReward)."""

    TYPES: ClassVar[tuple[str, ...]] = ("hf_classifier",)

    type: str = "hf_classifier"
    name_or_path: str = MISSING  # a hub id or a local folder
    label_index: Any = None  # which logit(s) to return: an int or a list of ints; null = all labels
    batch_size: int = 8
    device: str = "cpu"
    max_length: int | None = 512  # truncation in tokens; null = the tokenizer's model_max_length
    prompt_format: PromptFormat = PromptFormat["concat"]
    separator: str = ""
    activation: Activation = Activation["none"]
    names: list[str] | None = None  # output names; null = the model's id2label (`score` for one logit)
    dtype: str | None = None  # a torch dtype name; null = float32
    tokenizer: str | None = None  # a tokenizer folder when the model has none; null = the model's own


@dataclass
class CheckpointSpec(RewardSpec):
    """A reward or attribute model trained by this project (steerable.rewards.checkpoint.CheckpointReward)."""

    TYPES: ClassVar[tuple[str, ...]] = ("checkpoint",)

    type: str = "checkpoint"
    path: str = MISSING  # its run folder (or checkpoints/final)
    outputs: list[str] | None = None  # which of its outputs; null = all
    batch_size: int = 8
    device: str = "cpu"


# Registered with Hydra as `reward_schema_<kind>`, which the conf/reward files extend.
REWARD_SCHEMAS: dict[str, type[RewardSpec]] = {
    "length": LengthSpec,
    "readability": ReadabilitySpec,
    "sentiment": SentimentSpec,
    "classifier": ClassifierSpec,
    "checkpoint": CheckpointSpec,
}


def check_reward_specs(rewards: dict[str, Any], key: str = "reward") -> None:
    """A typed spec must keep its own type (`reward.<name>.type` cannot turn a length spec into a classifier)."""
    for name, spec in rewards.items():
        types = getattr(spec, "TYPES", ())
        if types and spec.type not in types:
            raise ConfigError(
                f"{key}.{name}.type={spec.type} does not match its schema ({type(spec).__name__} is for "
                f"type {' or '.join(types)}); give a new source its own conf/reward file"
            )
