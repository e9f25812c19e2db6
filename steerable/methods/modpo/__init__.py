"""MODPO, multi-objective DPO (Zhou et al. 2024): DPO on one objective's preference pairs with a margin from the
other objectives' rewards weighted by w, one policy per weighting; a Hydra multirun over `method.weights` gives
the front."""

from steerable.methods.modpo.config import MODPOConfig, check
from steerable.methods.registry import MethodSpec, Stage

SPEC = MethodSpec(
    summary="multi-objective DPO at one fixed weighting w (sweep w for the front), margin = other rewards",
    config=MODPOConfig,
    stages=(
        Stage("pairs", doc="target-objective pairs, every objective scored"),
        Stage("train", requires=("pairs",), doc="the MODPO loss at method.weights, LoRA"),
    ),
    check=check,
    needs=("reward=[verbosity,positivity]",),
    paper="Zhou et al. 2024, Beyond One-Preference-Fits-All Alignment: Multi-Objective DPO",
    policy=".policy:load_fixed_weights_policy",
)

__all__ = ["SPEC", "MODPOConfig"]
