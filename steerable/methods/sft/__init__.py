"""Supervised fine-tuning on assistant turns (loss on assistant tokens only): the base recipe other methods reuse."""

from steerable.methods.registry import MethodSpec, train_then_eval
from steerable.methods.sft.config import SFTConfig, check

SPEC = MethodSpec(
    summary="supervised fine-tuning on assistant turns",
    config=SFTConfig,
    stages=train_then_eval(train_doc="LoRA (or full) SFT", eval_doc="samples before/after"),
    check=check,
)
