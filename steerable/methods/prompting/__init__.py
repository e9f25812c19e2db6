"""The prompting baseline: the base model, untrained, asked for a weighting of the objectives in words (a
system message). Every steerable method must beat it to be worth its training."""

from steerable.methods.prompting.config import PromptingConfig
from steerable.methods.registry import MethodSpec, Stage

SPEC = MethodSpec(
    summary="the base model steered by an instruction in the prompt (no training; a benchmark baseline)",
    config=PromptingConfig,
    stages=(Stage("base", doc="record the base model (nothing is trained)"),),
    policy=".policy:load_prompting_policy",
)

__all__ = ["SPEC", "PromptingConfig"]
