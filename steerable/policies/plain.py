"""Policies without controls: a run's fine-tuned model (SFT, SuperHF, RL, ...) or a bare base model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from steerable.backbone import load_backbone
from steerable.backbone.adapters import reference_policy
from steerable.config.schema import ModelConfig
from steerable.generation import Completion, GenerationSettings
from steerable.policies.base import Control, Network, SteerablePolicy
from steerable.policies.runs import FINAL_MODEL_DIR, run_kind, run_model_config


class PlainPolicy(SteerablePolicy):
    """One model, sampled as is. `adapters_off`: generate with its LoRA adapters switched off (the model it
    was trained from, without a second copy in memory)."""

    def __init__(self, network: Network, adapters_off: bool = False) -> None:
        super().__init__(network)
        self.adapters_off = adapters_off

    def controls(self) -> list[Control]:
        return []

    def _generate(
        self, prompts: list[list[dict]], values: dict[str, Any], settings: GenerationSettings
    ) -> list[Completion]:
        if not self.adapters_off:
            return self.sampler().generate(prompts, settings)
        with reference_policy(self.model):
            return self.sampler().generate(prompts, settings)


def load_run_model(run_dir: Path) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """The trained model of a run folder: its base model plus the adapter (or full weights) in checkpoints/final."""
    final = Path(run_dir) / FINAL_MODEL_DIR
    if not final.is_dir():
        raise FileNotFoundError(
            f"{run_dir} has no trained model at {FINAL_MODEL_DIR}/ (did training finish?)"
        )
    return load_backbone(run_model_config(run_dir), adapter_dir=final)


def load_plain_policy(run_dir: Path) -> PlainPolicy:
    """The policy of a run whose method has no controls (every method whose spec names this loader)."""
    return PlainPolicy(run_network(run_dir))


def run_network(run_dir: Path) -> Network:
    """A run's trained model (`load_run_model`) with where it came from: what a run's policy is built on."""
    model, tokenizer = load_run_model(run_dir)
    return Network(model, tokenizer, f"run={run_dir}", run_kind(run_dir), run_model_config(run_dir))


def base_policy(model_cfg: ModelConfig) -> PlainPolicy:
    """A bare model from its config (no run): what `steerable-generate model=...` samples from."""
    model, tokenizer = load_backbone(model_cfg)
    return PlainPolicy(Network(model, tokenizer, f"model={model_cfg.name}", "base", model_cfg))


def starting_policy(policy: SteerablePolicy) -> PlainPolicy:
    """The model a policy was trained from: its adapters switched off (LoRA), else the base loaded again."""
    if isinstance(policy.model, PeftModel):
        return PlainPolicy(replace(policy.network, kind="base"), adapters_off=True)
    if policy.model_cfg is None:
        raise ValueError(f"{policy.origin}: the base model it was trained from is not known")
    return base_policy(policy.model_cfg)
