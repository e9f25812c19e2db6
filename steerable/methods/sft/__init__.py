"""Supervised fine-tuning on assistant turns (loss on assistant tokens only): the base recipe other methods reuse."""

from steerable.methods.registry import MethodSpec, Stage
from steerable.methods.sft.config import SFTConfig, check

SPEC = MethodSpec(
    name="sft",
    summary="supervised fine-tuning on assistant turns",
    config=SFTConfig,
    stages=(
        Stage("train", "steerable.methods.sft.stages:train_stage", doc="LoRA (or full) SFT"),
        Stage("eval", "steerable.methods.sft.stages:eval_stage", ("train",), "samples before/after"),
    ),
    check=check,
)
