"""The rewards CLP, Rewarded Soups and RL train on: the reward sources, z-scored with statistics the calibrate
stage froze from reference samples (calibration.json, also the hypervolume reference point of every evaluation)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from steerable.rewards.base import RewardStack, build_reward_source
from steerable.rewards.normalize import ZScoreNormalizer

CALIBRATION = "calibration.json"


class FrozenRewards:
    """The objectives' scores, z-scored with statistics frozen by the calibrate stage: [N, m]."""

    def __init__(self, stack: RewardStack, normalizer: ZScoreNormalizer | None) -> None:
        self.stack, self.normalizer = stack, normalizer

    @property
    def names(self) -> list[str]:
        return self.stack.names

    def raw(self, prompts: list[str], texts: list[str]) -> torch.Tensor:
        return self.stack.score(prompts, texts)

    def __call__(self, prompts: list[str], texts: list[str]) -> torch.Tensor:
        raw = self.raw(prompts, texts)
        return self.normalizer(raw) if self.normalizer is not None else raw


def load_rewards(rewards: dict, calibration: dict) -> FrozenRewards:
    stack = RewardStack({n: build_reward_source(rewards[n]) for n in calibration["objectives"]})
    normalizer = None
    if calibration["normalizer"] is not None:
        normalizer = ZScoreNormalizer()
        normalizer.load_state_dict(calibration["normalizer"])
    return FrozenRewards(stack, normalizer)


def read_calibration(run_dir: Path) -> dict:
    path = Path(run_dir) / CALIBRATION
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the calibrate stage first")
    return json.loads(path.read_text())
