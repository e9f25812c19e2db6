"""The prompting baseline's one stage: nothing is trained, the run only records its base model."""

from __future__ import annotations

from steerable.methods.base import RunContext
from steerable.pipeline import StageResults, StageSummary


def base_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    """Nothing to train: the run records which base model it is, so its policy loads from the saved config."""
    return {"model": ctx.cfg.model.name, "trainable_params": 0}
