"""SteerLM (Dong et al. 2023): steer a policy with attribute values written before its reply."""

from steerable.methods.registry import Evaluation, MethodSpec, Stage
from steerable.methods.steerlm.config import SteerLMConfig, check

_S = "steerable.methods.steerlm"

SPEC = MethodSpec(
    name="steerlm",
    summary="attribute model -> annotation -> attribute-conditioned SFT -> bootstrap / SteerLM 2.0",
    config=SteerLMConfig,
    stages=(
        Stage("apm", f"{_S}.stages:apm_stage", doc="attribute prediction model"),
        Stage("annotate", f"{_S}.stages:annotate_stage", ("apm",), "label the data with the APM"),
        Stage("acsft", f"{_S}.stages:acsft_stage", ("annotate",), "attribute-conditioned SFT"),
        Stage("baseline", f"{_S}.stages:baseline_stage", ("annotate",), "plain SFT on the same data"),
        Stage(
            "bootstrap",
            f"{_S}.stages:bootstrap_stage",
            ("apm", "annotate", "acsft"),
            "sample, relabel, fine-tune",
            reads=("steerlm2",),  # builds on the newest policy of the run
        ),
        Stage(
            "steerlm2",
            f"{_S}.stages:steerlm2_stage",
            ("apm", "annotate", "acsft", "baseline"),
            "SteerLM 2.0",
            reads=("bootstrap",),
        ),
        Stage(
            "eval",
            f"{_S}.stages:eval_stage",
            ("acsft",),
            "steerability of every dial",
            reads=("apm", "annotate", "baseline", "bootstrap", "steerlm2"),  # the report's sections
        ),
    ),
    check=check,
    evaluation=Evaluation("steerability", f"{_S}.evaluate:eval_steerability", doc="each attribute's dial"),
    policy=f"{_S}.policy:load_steerlm_policy",
    paper="Dong et al. 2023, SteerLM; Wang et al. 2024, SteerLM 2.0",
)
