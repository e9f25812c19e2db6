"""CLP (Conditioned Language Policy), its Rewarded Soups baseline, and plain on-policy RL: one trainer, three
recipes that differ only in their train stage (and RL has no Pareto evaluation)."""

from dataclasses import replace

from steerable.methods.clp.config import CLPConfig, RewardedSoupsConfig, RLConfig, check, check_rl
from steerable.methods.registry import Evaluation, MethodSpec, Stage

_WARM_START = Stage(
    "warm_start",
    "steerable.methods.warm_start:warm_start_stage",
    doc="SFT warm start (method.warm_start.steps > 0)",
    produces=("path",),
)
_CALIBRATE = Stage("calibrate", doc="freeze reward z-score statistics", produces=("path",))
_EVAL = Stage(
    "eval", requires=("calibrate", "train"), doc="Pareto front on a weight grid", produces=("report",)
)
_PARETO = Evaluation("pareto", ".evaluate:eval_pareto", doc="rewards over a weight grid, hypervolume")


def _trained_by(function: str) -> Stage:
    return Stage("train", f".stages:{function}", requires=("calibrate",))


CLP = MethodSpec(
    summary="multi-objective RL over sampled weightings, one weight-conditioned policy",
    config=CLPConfig,
    stages=(_WARM_START, _CALIBRATE, _trained_by("clp_train_stage"), _EVAL),
    check=check,
    evaluation=_PARETO,
    policy=".policy:load_weighted_policy",
    needs=("reward=[verbosity,positivity]",),
    paper="Wang et al. 2024, Conditioned Language Policy",
)
REWARDED_SOUPS = replace(  # the same inference path and evaluation as CLP
    CLP,
    summary="one RL run per reward, LoRA updates interpolated at inference",
    config=RewardedSoupsConfig,
    stages=(_WARM_START, _CALIBRATE, _trained_by("soups_train_stage"), _EVAL),
    paper="Ramé et al. 2023, Rewarded Soups",
)
RL = MethodSpec(
    summary="on-policy RL (REINFORCE + leave-one-out) on one reward or a fixed weighting",
    config=RLConfig,
    stages=(_WARM_START, _CALIBRATE, _trained_by("rl_train_stage")),
    check=check_rl,
    needs=("reward=[verbosity]",),
)
SPECS = [CLP, REWARDED_SOUPS, RL]
