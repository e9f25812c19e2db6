"""The `method.*` keys of ric and its start-up rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from steerable.config.method import chosen_objectives
from steerable.config.sampling import SamplingConfig
from steerable.config.schema import ConfigError, RecipeConfig, at_least, choice_enum
from steerable.methods.registry import needs_responses

# linf: the paper's preference-to-reward mapping | l2: the reference code's evaluation script | linear: w_i
Mapping = choice_enum("Mapping", ["linf", "l2", "linear"])
# zscore: the paper's per-objective z-score by training-data statistics | none: raw scores in the prompt
Normalize = choice_enum("Normalize", ["zscore", "none"])
# index: the paper's tags <rm1_score>, <rm2_score> | names: <concise_score>, ... (the objectives' names)
Tags = choice_enum("Tags", ["index", "names"])


@dataclass
class RiCConfig(RecipeConfig):
    """Rewards-in-Context: SFT with the replies' scores in the prompt, online rounds that extend the front."""

    name: str = "ric"
    lr: float = 1.414e-4  # the reference code's offline learning rate
    objectives: list[str] = field(
        default_factory=list
    )  # reward sources in prompt order; empty = every source
    normalize: Normalize = Normalize["zscore"]
    decimals: int = 1  # digits of the scores written into prompts (the paper rounds to one)
    tags: Tags = Tags["index"]
    mapping: Mapping = Mapping["linf"]
    # Online rounds after the offline SFT (0 = offline only); the reference code's README runs 2.
    online_iterations: int = 2
    online_samples: int = 64  # generated replies per round (targets placed around the front)
    online_steps: int | None = None  # optimizer steps per round; null = trainer.max_steps / 5 (20000 : 4000)
    online_lr: float = 1e-5  # the reference code's online learning rate, constant
    quantile: float = 0.7  # a sample extends the front when one of its scores reaches this quantile
    origin_samples: int | None = None  # offline examples (front-filtered) mixed into each round; null = all
    sampling: SamplingConfig = field(  # the reference code's online sampling
        default_factory=lambda: SamplingConfig(max_new_tokens=48, do_sample=True, temperature=0.7, top_p=0.9)
    )
    generation_batch_size: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least("method.decimals", self.decimals, 0)
        at_least("method.online_iterations", self.online_iterations, 0)
        at_least("method.online_samples", self.online_samples, 1)
        at_least("method.online_lr", self.online_lr, 0, strictly=True)
        if self.online_steps is not None:
            at_least("method.online_steps", self.online_steps, 1)
        if not 0.0 <= self.quantile <= 1.0:
            raise ConfigError(f"method.quantile must be in [0, 1], got {self.quantile}")


def objective_names(cfg: Any) -> list[str]:
    """The reward keys written into prompts, in order (`method.objectives`, else every source)."""
    names = chosen_objectives(cfg)
    if len(names) < 2:
        raise ConfigError(
            f"method=ric needs at least two objectives, got {names}: e.g. reward=[verbosity,positivity]"
        )
    return names


def check(cfg: Any) -> None:
    needs_responses(cfg)
    objective_names(cfg)
