"""The `method.*` keys of steerlm: the schema Hydra validates its conf/method option against."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from steerable.config.base import ConfigError, choice_enum
from steerable.config.method import RecipeConfig
from steerable.config.sampling import SamplingConfig
from steerable.methods.registry import needs_responses
from steerable.methods.reward_models.config import Pooling

# Attribute names in label order: auto (by data set: oasst1 -> quality, toxicity, humor, creativity; helpsteer2 ->
# the 5 HelpSteer ones; demo -> verbosity, positivity) | oasst | helpsteer | steerlm | demo | custom (= `attributes`)
Preset = choice_enum("Preset", ["auto", "oasst", "helpsteer", "steerlm", "demo", "custom"])
# apm: annotate the data with the attribute model (the paper) | human: the data's own labels
Labels = choice_enum("Labels", ["apm", "human"])


@dataclass
class BootstrapConfig:
    """SteerLM step 4: sample for high-quality attribute values, relabel with the APM, fine-tune again."""

    num_prompts: int = (
        64  # training prompts to sample for (null-free: the first N of the shuffled train split)
    )
    samples_per_prompt: int = 2
    sampling: SamplingConfig = field(  # the paper's top-k sampling (Eq. 3)
        default_factory=lambda: SamplingConfig(do_sample=True, top_k=50)
    )
    # "name:value" items to request: high quality (the paper's quality == max)
    condition: list[str] = field(default_factory=lambda: ["quality:4"])
    max_steps: int | None = None  # null = trainer.max_steps
    lr: float | None = None  # null = method.lr

    def __post_init__(self) -> None:
        if self.num_prompts < 1 or self.samples_per_prompt < 1:
            raise ConfigError("method.bootstrap.num_prompts and samples_per_prompt must be at least 1")


@dataclass
class SteerLM2Config:
    """SteerLM 2.0 (spec A8): importance-weighted KL fit of the conditioned policy to P(a|x,y)·P(y|x).
    Defaults are the paper's (n=10, temperature 0.7, top-p 0.9, 2 iterations x 2 epochs, constant lr 1e-7)
    except the prompt count (20,000 there)."""

    num_prompts: int = 64
    samples_per_prompt: int = 10
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(do_sample=True, temperature=0.7, top_p=0.9)
    )
    condition: list[str] = field(default_factory=lambda: ["quality:4"])  # requested a: high-quality combos
    iterations: int = 2  # resample from the updated policy between iterations
    epochs: int = 2
    lr: float = 1.0e-7  # the paper's constant lr (for a 70B model; small models need more)
    groups_per_step: int = 2  # (prompt, attributes) groups per optimizer step; a group never splits
    concentration: float = 24.0  # alpha + beta of the Beta read of the attribute model's prediction

    def __post_init__(self) -> None:
        if self.samples_per_prompt < 2:
            raise ConfigError(
                f"method.steerlm2.samples_per_prompt must be at least 2 (weights are normalised within a "
                f"group), got {self.samples_per_prompt}"
            )
        for key in ("num_prompts", "iterations", "epochs", "groups_per_step"):
            if getattr(self, key) < 1:
                raise ConfigError(f"method.steerlm2.{key} must be at least 1, got {getattr(self, key)}")
        if self.lr <= 0 or self.concentration <= 0:
            raise ConfigError("method.steerlm2.lr and method.steerlm2.concentration must be positive")


@dataclass
class SteerEvalSettings:
    """The steerability sweep: each attribute's dial over its range on held-out prompts."""

    attributes: list[str] = field(default_factory=list)  # empty = every attribute of the schema
    values: list[int] = field(default_factory=list)  # empty = every integer of value_range
    num_prompts: int = 16
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # greedy
    batch_size: int = 16
    samples_per_value: int = 3  # dial samples per value shown in the report


@dataclass
class SteerLMConfig(RecipeConfig):
    """SteerLM: attribute model -> annotation -> attribute-conditioned SFT -> bootstrapping -> steered eval.

    `lr`, `batch_size`, ... and trainer.max_steps are the attribute-conditioned SFT recipe (and its unlabelled
    baseline); the APM and bootstrap rounds have their own keys."""

    name: str = "steerlm"
    # bootstrap and steerlm2 are opt-in (slow); null would run every stage
    stages: list[str] | None = field(default_factory=lambda: ["apm", "annotate", "acsft", "baseline", "eval"])
    preset: Preset = Preset["auto"]
    # explicit names in label order, e.g. [quality,humor]; wins over the preset
    attributes: list[str] = field(default_factory=list)
    value_range: list[int] = field(default_factory=lambda: [0, 4])
    label_start: str = "<extra_id_2>"  # NeMo's marker before the label string, written as plain text
    labels: Labels = Labels["apm"]
    # "name:value" items for attributes a user leaves out (default: the good end, else the commonest value)
    inference_defaults: list[str] = field(default_factory=list)
    # Existing artifacts to reuse instead of running the stage that makes them:
    apm: str | None = None  # an attribute_model run (or its checkpoints/final)
    annotated: str | None = None  # an `annotate` folder of an earlier steerlm run
    policy: str | None = None  # an earlier steerlm run whose conditioned policy to bootstrap/evaluate
    apm_lr: float = 1.0e-4
    apm_steps: int | None = None  # null = trainer.max_steps
    apm_batch_size: int = 4
    apm_pooling: Pooling = Pooling["last"]
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    steerlm2: SteerLM2Config = field(default_factory=SteerLM2Config)
    eval: SteerEvalSettings = field(default_factory=SteerEvalSettings)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.preset == "custom" and not self.attributes:
            raise ConfigError("method.preset=custom needs method.attributes=[name, ...]")
        if len(set(self.attributes)) != len(self.attributes):
            raise ConfigError(f"method.attributes has duplicates: {list(self.attributes)}")
        if len(self.value_range) != 2 or self.value_range[0] >= self.value_range[1]:
            raise ConfigError(
                f"method.value_range must be [low, high] with low < high, got {self.value_range}"
            )
        if not self.label_start.strip():
            raise ConfigError("method.label_start must be a non-blank marker string")


def check(cfg: Any) -> None:
    needs_responses(cfg)
    if cfg.method.labels == "human" and cfg.data.format == "hh-rlhf":
        raise ConfigError(
            "method.labels=human needs attribute labels in the data; hh-rlhf has none (use method.labels=apm)"
        )
