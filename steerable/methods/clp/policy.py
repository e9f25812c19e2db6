"""A CLP or Rewarded Soups policy at inference: one weighting of the objectives (a point on the simplex) mixes
the per-objective adapters per example, or is written into the prompt (CLP's prompt variant)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel

from steerable.backbone.adapters import DEFAULT_ADAPTER, load_named_adapters
from steerable.backbone.loading import load_base_model, load_tokenizer
from steerable.backbone.mixing import AdapterMixer, weighted_adapter
from steerable.config.schema import ConfigError, ModelConfig
from steerable.generation import Completion, GenerationSettings
from steerable.generation.hf import render_prompt
from steerable.generation.mixture import MixtureSampler
from steerable.methods.clp.conditioning import ParameterConditioning, PromptConditioning
from steerable.policies.base import Control, Network, SteerablePolicy, weights_control
from steerable.policies.runs import FINAL_MODEL_DIR, METADATA_FILE, run_kind, run_model_config

WEIGHTS = "weights"


def load_steerable_policy(run_dir: Path) -> tuple[PeftModel, Any, Any, dict]:
    """A CLP or Rewarded Soups run's policy with its conditioning (weights -> adapters or prompt) and metadata."""
    final = Path(run_dir) / FINAL_MODEL_DIR
    meta_file = final / METADATA_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(
            f"{run_dir} has no trained policy at {FINAL_MODEL_DIR}/ (did training finish?)"
        )
    meta = json.loads(meta_file.read_text())
    if "objectives" not in meta or "adapters" not in meta:
        raise ValueError(f"{run_dir} is not a CLP or rewarded_soups run (no objectives in {meta_file})")
    cfg: ModelConfig = run_model_config(run_dir)
    tokenizer = load_tokenizer(cfg)
    folders = {name: final / name for name in meta["adapters"]}
    model = load_named_adapters(load_base_model(cfg, tokenizer), folders)
    model.eval()
    if meta["conditioned"]:
        conditioning: Any = ParameterConditioning(AdapterMixer(model, meta["conditioned"]))
    else:
        model.base_model.set_adapter(meta["adapters"])
        conditioning = PromptConditioning(meta["objectives"])
    return model, tokenizer, conditioning, meta


class WeightedPolicy(SteerablePolicy):
    """`weights`: one value per objective in the run's order; uniform when not given."""

    def __init__(
        self,
        network: Network,
        conditioning: ParameterConditioning | PromptConditioning,
        objectives: list[str],
    ) -> None:
        super().__init__(network)
        self.conditioning, self.objectives = conditioning, list(objectives)

    @property
    def controls_in_weights(self) -> bool:
        return isinstance(self.conditioning, ParameterConditioning)

    def controls(self) -> list[Control]:
        return [
            weights_control(
                self.objectives, "how much each objective counts; the policy was trained for every weighting"
            )
        ]

    def describe(self, values: dict[str, Any]) -> str:
        return f"weights: {dict(zip(self.objectives, values[WEIGHTS], strict=True))}"

    def network_for(self, values: dict[str, Any]) -> torch.nn.Module:
        """Parameter conditioning: the one adapter of this weighting (`adapter_for`) folded into the base."""
        if not self.controls_in_weights:
            return super().network_for(values)
        return self.adapter_for(values).merge_and_unload(progressbar=False)

    def adapter_for(self, values: dict[str, Any]) -> torch.nn.Module:
        """Parameter conditioning: one adapter of the concatenated ranks, exact at this weighting."""
        if not self.controls_in_weights:
            return super().adapter_for(values)
        return weighted_adapter(self.conditioning.mixer, values[WEIGHTS], DEFAULT_ADAPTER)

    def plain_prompt(self, messages: list[dict], values: dict[str, Any]) -> str | None:
        """Prompt conditioning writes the weighting into the system message; parameter conditioning has no
        prompt form."""
        if not isinstance(self.conditioning, PromptConditioning):
            return None
        weighted = self.conditioning.prompt(messages, torch.tensor(values[WEIGHTS]))
        return render_prompt(self.tokenizer, weighted)

    def alternatives(self) -> dict[str, SteerablePolicy]:
        """Rewarded Soups' single-reward policies also decode as a zero-shot logit mixture (Σ w_i log p_i)."""
        if self.kind != "rewarded_soups" or not self.controls_in_weights:
            return {}
        return {"logit mixing": LogitMixingPolicy(self.network, self.conditioning, self.objectives)}

    def _generate(
        self, prompts: list[list[dict]], values: dict[str, Any], settings: GenerationSettings
    ) -> list[Completion]:
        weights = torch.tensor([values[WEIGHTS]] * len(prompts))
        shown = [self.conditioning.prompt(p, w) for p, w in zip(prompts, weights, strict=True)]
        rows = self.conditioning.rows(weights)
        return self.sampler().generate(shown, settings, row_context=rows)


class LogitMixingPolicy(WeightedPolicy):
    """The same adapters decoded from Σ w_i log p_i (one forward row per adapter and token), not from mixed
    parameters; it has no single network to export."""

    controls_in_weights = False

    def alternatives(self) -> dict[str, SteerablePolicy]:
        return {}

    def network_for(self, values: dict[str, Any]) -> torch.nn.Module:
        raise ConfigError(f"{self.origin}: logit mixing decodes several adapters at once; export the soup")

    def _generate(
        self, prompts: list[list[dict]], values: dict[str, Any], settings: GenerationSettings
    ) -> list[Completion]:
        n = settings.num_return_sequences  # the mixture sampler draws one reply per prompt row
        rows = [p for p in prompts for _ in range(n)]
        weights = torch.tensor([values[WEIGHTS]] * len(rows))
        sampler = MixtureSampler(self.conditioning.mixer, self.tokenizer, mode="logit")
        out = sampler.generate(rows, settings, weights)
        for c in out:
            c.prompt_index //= n
        return out


def load_weighted_policy(run_dir: Path) -> WeightedPolicy:
    """The policy of a clp or rewarded_soups run."""
    model, tokenizer, conditioning, meta = load_steerable_policy(run_dir)
    network = Network(model, tokenizer, f"run={run_dir}", run_kind(run_dir), run_model_config(run_dir))
    return WeightedPolicy(network, conditioning, meta["objectives"])
