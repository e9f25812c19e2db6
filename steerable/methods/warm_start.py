"""The warm_start stage of an online method: SFT on the data's replies before RL, into <run>/warm_start/.

CLP's and Rewarded Soups' papers start RL from an SFT policy (pi_ref), not from a raw instruct model. Once
this stage has saved its adapter, the run's base is the model with that adapter folded in, for every later
stage (`RunContext.model_config`) and for the run's policy at inference (`policies.runs.run_model_config`).
Its cost is this stage's, so a benchmark arm that warm-starts is charged for it.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from steerable.methods.base import RunContext, sub_context
from steerable.methods.sft_recipe import train_sft
from steerable.pipeline import SKIPPED_KEY, StageResults, StageSummary
from steerable.policies.runs import WARM_START_DIR

log = logging.getLogger(__name__)


def warm_start_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    """`method.warm_start.steps` SFT steps (its own lr and batch size) on the run's data; none when 0."""
    settings = ctx.cfg.method.warm_start
    if settings.steps == 0:
        return {"steps": 0, SKIPPED_KEY: "method.warm_start.steps=0: RL starts from model.* as it is"}
    method = replace(
        ctx.cfg.method,
        lr=settings.lr,
        batch_size=settings.batch_size,
        warmup_steps=settings.warmup_steps,
    )
    sub = sub_context(ctx, WARM_START_DIR, method=method, max_steps=settings.steps)
    summary = train_sft(sub)
    log.info("warm start: %d SFT steps; later stages start from %s", settings.steps, sub.run_dir)
    return {**summary, "path": str(sub.run_dir)}
