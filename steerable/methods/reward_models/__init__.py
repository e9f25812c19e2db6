"""Scoring models on the shared backbone: a Bradley–Terry reward model and SteerLM's attribute prediction model."""

from steerable.methods.registry import Evaluation, MethodSpec, Stage
from steerable.methods.reward_models.config import (
    AttributeModelConfig,
    RewardModelConfig,
    check_attribute_model,
    check_reward_model,
)

_STAGES = "steerable.methods.reward_models.stages"
_ACCURACY = Evaluation(
    "reward_accuracy",
    "steerable.methods.reward_models.evaluate:eval_reward_accuracy",
    reads="scorer",
    doc="pairwise accuracy (reward model) or per-attribute error and correlation (attribute model)",
)

SPECS = [
    MethodSpec(
        name="reward_model",
        summary="Bradley-Terry reward model on preference pairs",
        config=RewardModelConfig,
        stages=(
            Stage("train", f"{_STAGES}:train_reward_model_stage"),
            Stage("evaluate", f"{_STAGES}:evaluate_stage", ("train",)),
        ),
        check=check_reward_model,
        evaluation=_ACCURACY,
        policy=None,
    ),
    MethodSpec(
        name="attribute_model",
        summary="SteerLM attribute prediction model (one regression output per attribute)",
        config=AttributeModelConfig,
        stages=(
            Stage("train", f"{_STAGES}:train_attribute_model_stage"),
            Stage("evaluate", f"{_STAGES}:evaluate_stage", ("train",)),
        ),
        check=check_attribute_model,
        evaluation=_ACCURACY,
        policy=None,
        paper="Dong et al. 2023, SteerLM",
    ),
]
