"""PCM: frozen per-preference LoRA experts merged token by token with weights from a learned controller."""

from steerable.methods.pcm.config import PCMConfig, check
from steerable.methods.registry import Evaluation, MethodSpec, Stage

_S = "steerable.methods.pcm"

SPEC = MethodSpec(
    name="pcm",
    summary="per-side experts mixed token by token by a learned Preference Control Model",
    config=PCMConfig,
    stages=(
        Stage("experts", f"{_S}.stages:experts_stage", doc="one SFT expert per side of each dimension"),
        Stage("pcm", f"{_S}.stages:pcm_stage", ("experts",), "the controller, trained with REBEL"),
        Stage("eval", f"{_S}.stages:eval_stage", ("experts", "pcm"), "every composite preference"),
    ),
    check=check,
    needs=("reward=[verbosity,positivity]",),
    evaluation=Evaluation("pcm", f"{_S}.evaluate:eval_pcm", doc="rewards per composite preference"),
    policy=f"{_S}.policy:load_preference_policy",
)
