"""Direct Preference Optimization: a LoRA policy trained on preference pairs against its own adapter-off
reference, with no reward model and no sampling (Rafailov et al. 2023; IPO and cDPO variants)."""

from steerable.methods.dpo.config import DPOConfig, check
from steerable.methods.registry import MethodSpec, Stage

_S = "steerable.methods.dpo.stages"

SPEC = MethodSpec(
    name="dpo",
    summary="direct preference optimization on chosen/rejected pairs, reference = adapter off",
    config=DPOConfig,
    stages=(
        Stage("train", f"{_S}:train_stage", doc="DPO (or IPO) on preference pairs, LoRA"),
        Stage("eval", f"{_S}:eval_stage", requires=("train",), doc="held-out margins and samples"),
    ),
    check=check,
    needs=("data=hh-rlhf",),
    paper="Rafailov et al. 2023, Direct Preference Optimization",
    policy="steerable.policies.plain:load_plain_policy",
)

__all__ = ["SPEC", "DPOConfig"]
