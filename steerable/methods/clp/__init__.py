"""CLP (Conditioned Language Policy), its Rewarded Soups baseline, and plain on-policy RL: one trainer."""

from steerable.methods.clp.config import CLPConfig, RewardedSoupsConfig, RLConfig, check, check_rl
from steerable.methods.registry import Evaluation, MethodSpec, Stage

_S = "steerable.methods.clp"
_CALIBRATE = Stage("calibrate", f"{_S}.stages:calibrate_stage", doc="freeze reward z-score statistics")
_EVAL = Stage("eval", f"{_S}.run_eval:eval_stage", ("calibrate", "train"), "Pareto front on a weight grid")
_PARETO = Evaluation("pareto", f"{_S}.run_eval:eval_pareto", doc="rewards over a weight grid, hypervolume")
_WEIGHTED = f"{_S}.policy:load_weighted_policy"

SPECS = [
    MethodSpec(
        name="clp",
        summary="multi-objective RL over sampled weightings, one weight-conditioned policy",
        config=CLPConfig,
        stages=(_CALIBRATE, Stage("train", f"{_S}.stages:clp_train_stage", ("calibrate",)), _EVAL),
        check=check,
        evaluation=_PARETO,
        policy=_WEIGHTED,
        paper="Wang et al. 2024, Conditioned Language Policy",
    ),
    MethodSpec(
        name="rewarded_soups",
        summary="one RL run per reward, LoRA updates interpolated at inference",
        config=RewardedSoupsConfig,
        stages=(_CALIBRATE, Stage("train", f"{_S}.stages:soups_train_stage", ("calibrate",)), _EVAL),
        check=check,
        evaluation=_PARETO,
        policy=_WEIGHTED,
        paper="Ramé et al. 2023, Rewarded Soups",
    ),
    MethodSpec(
        name="rl",
        summary="on-policy RL (REINFORCE + leave-one-out) on one reward or a fixed weighting",
        config=RLConfig,
        stages=(_CALIBRATE, Stage("train", f"{_S}.stages:rl_train_stage", ("calibrate",))),
        check=check_rl,
    ),
]
