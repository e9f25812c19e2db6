"""Scoring models on the shared backbone: a Bradley–Terry reward model and SteerLM's attribute prediction model.
Both train one head and share the eval stage and the `reward_accuracy` eval kind; neither is a policy."""

from dataclasses import replace

from steerable.methods.registry import Evaluation, MethodSpec, train_then_eval
from steerable.methods.reward_models.config import (
    AttributeModelConfig,
    RewardModelConfig,
    check_attribute_model,
    check_reward_model,
)

_ACCURACY = Evaluation(
    "reward_accuracy",
    ".evaluate:eval_reward_accuracy",
    reads="scorer",
    doc="pairwise accuracy (reward model) or per-attribute error and correlation (attribute model)",
)
_EVAL_DOC = "held-out pairwise accuracy or attribute error"
REWARD_MODEL = MethodSpec(
    summary="Bradley-Terry reward model on preference pairs",
    config=RewardModelConfig,
    stages=train_then_eval(".stages:train_reward_model_stage", eval_doc=_EVAL_DOC),
    check=check_reward_model,
    needs=("data=hh-rlhf",),
    evaluation=_ACCURACY,
    policy=None,
)
ATTRIBUTE_MODEL = replace(
    REWARD_MODEL,
    summary="SteerLM attribute prediction model (one regression output per attribute)",
    config=AttributeModelConfig,
    stages=train_then_eval(".stages:train_attribute_model_stage", eval_doc=_EVAL_DOC),
    check=check_attribute_model,
    needs=(),  # the default data (demo) has attribute labels
    paper="Dong et al. 2023, SteerLM",
)
SPECS = [REWARD_MODEL, ATTRIBUTE_MODEL]
