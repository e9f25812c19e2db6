"""The reward sources SuperHF filters by (method.reward) and reports against (method.gold_reward), as scorers of
(prompt, completion) pairs."""

from __future__ import annotations

from pathlib import Path

from steerable.config.schema import ConfigError
from steerable.methods.superhf.config import SUPERHF_REWARD_REQUIRED, SuperHFConfig
from steerable.methods.superhf.module import Scorer
from steerable.rewards.base import RewardSource, build_reward_source


def reward_source(rewards: dict, key: str, which: str, device: str = "cpu") -> RewardSource:
    """`method.<which>` names a source of the run's `reward` group, or a reward/attribute model run folder."""
    if key in rewards:
        return build_reward_source(rewards[key])
    if Path(key).exists():
        return build_reward_source({"type": "checkpoint", "path": key, "device": device})
    raise ConfigError(
        f"method.{which}={key!r} is neither a reward source of this run (reward=[...] gives {sorted(rewards)}) "
        "nor an existing reward model run folder"
    )


def scorer(source: RewardSource, output: str | None, which: str) -> Scorer:
    """One column of a reward source as (user prompts, completions) -> list of floats."""
    if output is not None and output not in source.names:
        raise ConfigError(
            f"method.reward_output={output!r} is not an output of method.{which} ({source.names})"
        )
    column = source.names.index(output) if output else 0

    def score(prompts: list[str], texts: list[str]) -> list[float]:
        return source.score(prompts, texts)[:, column].tolist()

    return score


def run_scorers(m: SuperHFConfig, rewards: dict, device: str = "cpu") -> tuple[Scorer, Scorer | None]:
    """The train reward and the gold judge; checked before any sampling (the train stage starts here)."""
    if not m.reward:
        raise ConfigError(SUPERHF_REWARD_REQUIRED)
    train = scorer(reward_source(rewards, m.reward, "reward", device), m.reward_output, "reward")
    if not m.gold_reward:
        return train, None
    return train, scorer(reward_source(rewards, m.gold_reward, "gold_reward", device), None, "gold_reward")
