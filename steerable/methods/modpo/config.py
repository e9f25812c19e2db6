"""The `method.*` keys of modpo and its start-up rules: which objectives, which one gives the pairs, which weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from steerable.config.method import chosen_objectives
from steerable.config.sampling import SamplingConfig
from steerable.config.schema import ConfigError, RecipeConfig, at_least
from steerable.methods.dpo.config import PAIR_FORMATS, data_format

WEIGHT_TOLERANCE = 1e-6
DATA_PREFERENCE = "preference"  # the target's name when the data's own chosen/rejected labels are the target


@dataclass
class MODPOConfig(RecipeConfig):
    """One MODPO policy: the target objective's pairs, the others' rewards as a margin, all weighted by w."""

    name: str = "modpo"
    lr: float = 5e-5  # as DPO with LoRA (steerable/methods/dpo/config.py)
    beta: float = 0.1  # the paper's beta
    # Reward sources that are objectives, in order; empty = every source of `reward`.
    objectives: list[str] = field(default_factory=list)
    # The objective whose preference pairs are trained on; empty = the data's own pairs (named "preference")
    # when the data has pairs, else the first objective (pairs ranked by its reward source).
    target: str = ""
    # One weight per objective (the objective order, with the data's preference first when it is the target),
    # on the simplex; empty = equal weights. The target's weight must be positive (the loss divides by it).
    weights: list[float] = field(default_factory=list)
    # Pairs from data without pairs: the data's reply (if any) and this many replies sampled from the starting
    # model per prompt, ranked by the target's reward source; the best and the worst make the pair.
    sampled_replies: int = 2
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(max_new_tokens=48, do_sample=True)
    )
    generation_batch_size: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least("method.beta", self.beta, 0, strictly=True)
        at_least("method.sampled_replies", self.sampled_replies, 0)
        if any(w < 0 for w in self.weights) or (
            self.weights and abs(sum(self.weights) - 1) > WEIGHT_TOLERANCE
        ):
            raise ConfigError(f"method.weights={list(self.weights)} must be non-negative and sum to 1")


def has_pairs(cfg: Any) -> bool:
    return data_format(cfg.data) in PAIR_FORMATS


def objectives_of(cfg: Any) -> tuple[list[str], str]:
    """(objective names in weight order, the target's name); errors name the key and what is allowed."""
    sources = chosen_objectives(cfg)
    target = cfg.method.target
    if has_pairs(cfg) and target not in sources:
        target = target or DATA_PREFERENCE
        names = [target, *sources]
    else:
        names = sources
        target = target or (names[0] if names else "")
        if names and target not in names:
            raise ConfigError(f"method.target={target} is not an objective of this run ({names})")
    if len(names) < 2:
        raise ConfigError(
            f"method=modpo needs at least two objectives, got {names}: e.g. reward=[verbosity,positivity] "
            "(or data with preference pairs plus one reward source)"
        )
    return names, target


def objective_weights(cfg: Any) -> dict[str, float]:
    """objective -> weight for this run (equal weights when `method.weights` is empty)."""
    names, target = objectives_of(cfg)
    weights = list(cfg.method.weights) or [1 / len(names)] * len(names)
    if len(weights) != len(names):
        raise ConfigError(f"method.weights={list(cfg.method.weights)} needs one value per objective {names}")
    chosen = dict(zip(names, (float(w) for w in weights), strict=True))
    if chosen[target] <= 0:
        raise ConfigError(
            f"method.weights gives the target objective {target} weight 0; MODPO divides by it "
            "(train that corner with method.target=<another objective>)"
        )
    return chosen


def check(cfg: Any) -> None:
    """The objectives resolve, the weights fit them, and the reference is the adapter-off model."""
    objective_weights(cfg)
    if data_format(cfg.data) == "prompts" and cfg.method.sampled_replies < 2:
        raise ConfigError(
            "method=modpo on prompts-only data needs method.sampled_replies >= 2 to build pairs"
        )
    if not cfg.model.lora.enabled:
        raise ConfigError(
            "method=modpo uses the adapter-off model as its reference and needs model.lora.enabled=true"
        )
