"""Direct Preference Optimization: a LoRA policy trained on preference pairs against its own adapter-off
reference, with no reward model and no sampling (Rafailov et al. 2023; IPO and cDPO variants)."""

from steerable.methods.dpo.config import DPOConfig, check
from steerable.methods.registry import MethodSpec, train_then_eval

SPEC = MethodSpec(
    summary="direct preference optimization on chosen/rejected pairs, reference = adapter off",
    config=DPOConfig,
    stages=train_then_eval(
        train_doc="DPO (or IPO) on preference pairs, LoRA", eval_doc="held-out margins and samples"
    ),
    check=check,
    needs=("data=hh-rlhf",),
    paper="Rafailov et al. 2023, Direct Preference Optimization",
)

__all__ = ["SPEC", "DPOConfig"]
