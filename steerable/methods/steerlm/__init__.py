"""SteerLM (Dong et al. 2023): steer a policy with attribute values written before its reply."""

from steerable.methods.registry import Evaluation, MethodSpec, Stage
from steerable.methods.steerlm.config import SteerLMConfig, check

SPEC = MethodSpec(
    summary="attribute model -> annotation -> attribute-conditioned SFT -> bootstrap / SteerLM 2.0",
    config=SteerLMConfig,
    stages=(
        Stage("apm", doc="attribute prediction model", produces=("path",)),
        Stage("annotate", requires=("apm",), doc="label the data with the APM", produces=("path",)),
        Stage("acsft", requires=("annotate",), doc="attribute-conditioned SFT", produces=("path",)),
        Stage("baseline", requires=("annotate",), doc="plain SFT on the same data", produces=("path",)),
        Stage(
            "bootstrap",
            requires=("apm", "annotate", "acsft"),
            reads=("steerlm2",),  # builds on the newest policy of the run
            doc="sample, relabel, fine-tune",
            produces=("path",),
        ),
        Stage(
            "steerlm2",
            requires=("apm", "annotate", "acsft", "baseline"),
            reads=("bootstrap",),
            doc="SteerLM 2.0",
            produces=("path",),
        ),
        Stage(
            "eval",
            requires=("acsft",),
            reads=("apm", "annotate", "baseline", "bootstrap", "steerlm2"),  # the report's sections
            doc="steerability of every dial",
            produces=("report",),
        ),
    ),
    check=check,
    evaluation=Evaluation("steerability", ".evaluate:eval_steerability", doc="each attribute's dial"),
    policy=".policy:load_steerlm_policy",
    paper="Dong et al. 2023, SteerLM; Wang et al. 2024, SteerLM 2.0",
)
