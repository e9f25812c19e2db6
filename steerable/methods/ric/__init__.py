"""Rewards-in-Context (Yang et al. 2024): SFT on replies whose reward scores are written into the prompt, online
rounds that add samples extending the Pareto front, and at inference a mapping from preference weights to the
rewards to ask for."""

from steerable.methods.registry import MethodSpec, Stage
from steerable.methods.ric.config import RiCConfig, check

SPEC = MethodSpec(
    summary="reward-conditioned SFT (scores in the prompt), online front augmentation, weights -> rewards",
    config=RiCConfig,
    stages=(
        Stage("offline", doc="score + z-score the replies, SFT with scores in the prompt"),
        Stage(
            "online",
            requires=("offline",),
            doc="rounds: generate for targets near the front, keep samples that extend it, fine-tune",
        ),
    ),
    check=check,
    needs=("reward=[verbosity,positivity]",),
    paper="Yang et al. 2024, Rewards-in-Context",
    policy=".policy:load_ric_policy",
)

__all__ = ["SPEC", "RiCConfig"]
