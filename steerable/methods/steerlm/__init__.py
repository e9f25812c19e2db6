"""SteerLM (Dong et al. 2023): steer a policy with attribute values written before its reply."""

from __future__ import annotations

from steerable.methods.base import RunContext
from steerable.methods.steerlm.run_eval import eval_stage
from steerable.methods.steerlm.stages import (
    acsft_stage,
    annotate_stage,
    apm_stage,
    baseline_stage,
    bootstrap_stage,
)
from steerable.methods.steerlm.steerlm2 import steerlm2_stage


def build_stages(ctx: RunContext) -> dict:
    stages = {
        "apm": apm_stage,
        "annotate": annotate_stage,
        "acsft": acsft_stage,
        "baseline": baseline_stage,
        "bootstrap": bootstrap_stage,
        "steerlm2": steerlm2_stage,
        "eval": eval_stage,
    }
    return {name: (lambda done, fn=fn: fn(ctx, done)) for name, fn in stages.items()}
