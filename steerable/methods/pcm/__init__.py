"""PCM: frozen per-preference LoRA experts merged token by token with weights from a learned controller."""

from steerable.methods.pcm.config import PCMConfig, check
from steerable.methods.registry import Evaluation, MethodSpec, Stage

SPEC = MethodSpec(
    summary="per-side experts mixed token by token by a learned Preference Control Model",
    config=PCMConfig,
    stages=(
        Stage("experts", doc="one SFT expert per side of each dimension", produces=("path",)),
        Stage(
            "pcm", requires=("experts",), doc="the controller, trained with REBEL", produces=("controller",)
        ),
        Stage("eval", requires=("experts", "pcm"), doc="every composite preference", produces=("report",)),
    ),
    check=check,
    needs=("reward=[verbosity,positivity]",),
    evaluation=Evaluation("pcm", ".evaluate:eval_pcm", doc="rewards per composite preference"),
    policy=".policy:load_preference_policy",
)
