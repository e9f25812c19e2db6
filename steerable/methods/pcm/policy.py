"""A PCM policy at inference: one side per preference dimension; the experts of the chosen sides are merged
token by token with the weights the controller reads from [preference description; prompt; reply so far].

The loaders and the controller's weight function live here because training (the `pcm` stage), the
evaluation and inference all use them; nothing here imports a training stage."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from steerable.backbone.adapters import load_named_adapters, wrap_lora
from steerable.backbone.loading import load_base_model, load_tokenizer
from steerable.backbone.mixing import AdapterMixer
from steerable.config.schema import ConfigError, ModelConfig
from steerable.data.tokenize import pad_rows
from steerable.generation import Completion, GenerationSettings
from steerable.generation.mixture import MixtureSampler, WeightFn
from steerable.methods.pcm.config import PCMConfig
from steerable.methods.pcm.controller import PreferenceController
from steerable.methods.pcm.preferences import (
    Dimension,
    active,
    composite_probabilities,
    describe,
    parse_dimensions,
    parse_preference,
)
from steerable.pipeline import StageResults, named_artifacts
from steerable.policies.base import Control, Network, Request, SteerablePolicy
from steerable.policies.runs import run_config, run_kind, run_model_config

CONTROLLER_DIR = "controller"
GROUP = "preference"  # control names: preference.<dimension>


@dataclass
class Mixture:
    """What PCM decodes with, travelling together through training, evaluation and inference: the frozen
    experts (one LoRA per side on one base), their tokenizer and mixer, the controller that weighs them, and
    the preference dimensions whose sides name the experts."""

    experts: PeftModel
    tokenizer: PreTrainedTokenizerBase
    mixer: AdapterMixer
    controller: PreferenceController
    dims: list[Dimension]


# ------------------------------------------------------------------------------------------- loading


def load_experts(path: Path, model_cfg: ModelConfig) -> tuple[PeftModel, Any, AdapterMixer]:
    """The experts saved by the `experts` stage: every side's adapter on one base, with their mixer."""
    meta = json.loads((Path(path) / "steerable.json").read_text())
    tokenizer = load_tokenizer(model_cfg)
    folders = {side: Path(path) / side for side in meta["sides"]}
    model = load_named_adapters(load_base_model(model_cfg, tokenizer), folders)
    model.eval()
    return model, tokenizer, AdapterMixer(model, meta["sides"])


def build_controller(m: PCMConfig, model_cfg, tokenizer, num_experts: int, seed: int) -> PreferenceController:
    """`small`: a random-init 2-layer Llama on the experts' tokenizer (positions align); `base`: base + LoRA."""
    if m.controller == "base":
        backbone = wrap_lora(load_base_model(model_cfg, tokenizer), model_cfg.lora)
    else:
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=m.controller_hidden,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=2 * m.controller_hidden,
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            backbone = LlamaForCausalLM(config)
    return PreferenceController(backbone, num_experts)


def load_controller(folder: Path, m: PCMConfig, model_cfg, tokenizer) -> PreferenceController:
    info = json.loads((Path(folder) / "controller.json").read_text())
    controller = build_controller(m, model_cfg, tokenizer, info["num_experts"], info["seed"])
    controller.load_state_dict(load_file(str(Path(folder) / "controller.safetensors")), strict=False)
    return controller.eval()


def load_mixture(experts_dir: Path, controller_dir: Path, m: PCMConfig, model_cfg: ModelConfig) -> Mixture:
    """A trained PCM: the experts stage's adapters and the controller the `pcm` stage saved."""
    experts, tokenizer, mixer = load_experts(experts_dir, model_cfg)
    controller = load_controller(controller_dir, m, model_cfg, tokenizer)
    return Mixture(experts, tokenizer, mixer, controller, parse_dimensions(m.dimensions))


# ------------------------------------------------------------------------------------ mixing weights


def controller_prefix(tokenizer, prompt: list[dict], preference: tuple[str, ...]) -> list[int]:
    messages = [
        {"role": "system", "content": describe(preference)},
        *[x for x in prompt if x["role"] != "system"],
    ]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def controller_weights(controller, tokenizer, items, dims, device="cpu"):
    """A MixtureSampler weight function: the controller on [description; prompt; tokens so far], masked to the
    preference's experts; `items[i]` = (prompt, preference) of prompt index i."""
    masks = torch.stack([active(pref, dims) for _, pref in items])
    prefixes = [controller_prefix(tokenizer, prompt, pref) for prompt, pref in items]

    def weights(indices: list[int], generated: torch.Tensor) -> torch.Tensor:
        rows = [prefixes[i] + generated[k].tolist() for k, i in enumerate(indices)]
        ids, mask = pad_rows(rows, tokenizer.pad_token_id)
        with torch.no_grad():
            log_alpha = controller(ids.to(device), mask.to(device), masks[indices].to(device))
        last = mask.sum(1) - 1
        return log_alpha[torch.arange(len(rows)), last].exp()

    return weights


# ------------------------------------------------------------------------------------------- policy


class PreferencePolicy(SteerablePolicy):
    """`preference.<dimension>`: one of the dimension's two sides, each required; `preference="a, b"` names
    one side per dimension at once."""

    def __init__(
        self, parts: Mixture, origin: str, kind: str = "pcm", model_cfg: ModelConfig | None = None
    ) -> None:
        super().__init__(Network(parts.experts, parts.tokenizer, origin, kind, model_cfg))
        self.parts = parts
        self.mixer, self.controller, self.dims = parts.mixer, parts.controller, parts.dims
        self.device = torch.device("cpu")

    def controls(self) -> list[Control]:
        return [
            Control(f"{GROUP}.{d.name}", "choice", doc=f"which end of {d.name}", options=(d.low, d.high))
            for d in self.dims
        ]

    def expand(self, given: dict[str, Any]) -> dict[str, Any]:
        if isinstance(given.get(GROUP), str):
            chosen = parse_preference(given.pop(GROUP), self.dims)
            given |= {f"{GROUP}.{d.name}": side for d, side in zip(self.dims, chosen, strict=True)}
        return given

    def controls_for(self, request: Request) -> dict[str, Any]:
        """Each dimension takes the side its objective leans to: the high side at a leaning of one half or more."""
        return {
            f"{GROUP}.{d.name}": d.high if lean >= 0.5 else d.low
            for d, lean in zip(self.dims, leanings(request, self.dims, self.origin), strict=True)
        }

    def preference(self, values: dict[str, Any]) -> tuple[str, ...]:
        return tuple(values[f"{GROUP}.{d.name}"] for d in self.dims)

    def describe(self, values: dict[str, Any]) -> str:
        return f"preference: {', '.join(self.preference(values))}"

    def to(self, device: torch.device | str) -> PreferencePolicy:
        self.device = torch.device(device)
        self.model.to(self.device)
        self.controller.to(self.device)
        return self

    def alternatives(self) -> dict[str, SteerablePolicy]:
        """The same experts and controller decoding graded requests as a blend of composite preferences."""
        blended = BlendedPreferencePolicy(self.parts, self.origin, self.kind, self.model_cfg)
        blended.device, blended.generation = self.device, self.generation
        return {"blended preferences": blended}

    def _generate(
        self, prompts: list[list[dict]], values: dict[str, Any], settings: GenerationSettings
    ) -> list[Completion]:
        n = settings.num_return_sequences  # the mixture sampler draws one reply per prompt row
        rows = [p for p in prompts for _ in range(n)]
        out = MixtureSampler(self.mixer, self.tokenizer).generate(
            rows, settings, self.mixture_weights(rows, values)
        )
        for c in out:
            c.prompt_index //= n
        return out

    def mixture_weights(self, rows: list[list[dict]], values: dict[str, Any]) -> WeightFn:
        """The controller's per-token expert weights for each prompt row under the chosen preference."""
        items = [(p, self.preference(values)) for p in rows]
        return controller_weights(self.controller, self.tokenizer, items, self.dims, self.device)


class BlendedPreferencePolicy(PreferencePolicy):
    """`preference.<dimension>` in [0, 1]: how far toward the dimension's high side (a side's name means 0 or
    1). It decodes with the average of the composite preferences' per-token mixtures, each weighted by its
    probability when every dimension takes its high side with that leaning, so the result is still one
    per-token probability mixture of the frozen experts.

    Not in the paper, whose preferences are discrete: a request between two sides gets a reply between them
    instead of snapping to one side. At leanings of 0 or 1 it decodes exactly as PreferencePolicy."""

    def controls(self) -> list[Control]:
        return [
            Control(f"{GROUP}.{d.name}", "number", doc=f"0 = {d.low}, 1 = {d.high}", low=0.0, high=1.0)
            for d in self.dims
        ]

    def expand(self, given: dict[str, Any]) -> dict[str, Any]:
        given = super().expand(given)
        for d in self.dims:
            side = given.get(f"{GROUP}.{d.name}")
            if side in (d.low, d.high):
                given[f"{GROUP}.{d.name}"] = 1.0 if side == d.high else 0.0
        return given

    def controls_for(self, request: Request) -> dict[str, Any]:
        leaning = leanings(request, self.dims, self.origin)
        return {f"{GROUP}.{d.name}": lean for d, lean in zip(self.dims, leaning, strict=True)}

    def alternatives(self) -> dict[str, SteerablePolicy]:
        return {}

    def describe(self, values: dict[str, Any]) -> str:
        return "preference: " + ", ".join(f"{d.high} {values[f'{GROUP}.{d.name}']:.2f}" for d in self.dims)

    def mixture_weights(self, rows: list[list[dict]], values: dict[str, Any]) -> WeightFn:
        leaning = {d.name: float(values[f"{GROUP}.{d.name}"]) for d in self.dims}
        parts = [
            (
                p,
                controller_weights(
                    self.controller, self.tokenizer, [(r, pref) for r in rows], self.dims, self.device
                ),
            )
            for pref, p in composite_probabilities(leaning, self.dims)
        ]

        def weights(indices: list[int], generated: torch.Tensor) -> torch.Tensor:
            return sum(p * part(indices, generated) for p, part in parts)

        return weights


def leanings(request: Request, dims: list[Dimension], origin: str) -> list[float]:
    """How far each dimension leans to its high side under a benchmark request: its objective's weight, or one
    minus it for an objective that wants less of the dimension."""
    out = []
    for d in dims:
        leaning = [
            request.weight(name) if o.direction > 0 else 1 - request.weight(name)
            for name, o in request.objectives.items()
            if o.attribute == d.name
        ]
        if len(leaning) != 1:
            raise ConfigError(
                f"{origin}: PCM dimension {d.name} needs exactly one objective of the request "
                f"{sorted(request.weights)} with attribute {d.name}, found {len(leaning)}"
            )
        out.append(leaning[0])
    return out


def load_preference_policy(run_dir: Path) -> PreferencePolicy:
    """A finished PCM run: the experts its `experts` stage recorded and the controller it trained."""
    run_dir = Path(run_dir)
    m: PCMConfig = run_config(run_dir, "method", PCMConfig)
    model_cfg = run_model_config(run_dir)
    done = StageResults.finished(run_dir, ["experts"], named_artifacts(m))
    parts = load_mixture(done.artifact("experts"), run_dir / CONTROLLER_DIR, m, model_cfg)
    return PreferencePolicy(parts, f"run={run_dir}", run_kind(run_dir), model_cfg)
