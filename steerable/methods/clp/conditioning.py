"""CLP's conditioned policy: which LoRA modules exist in m copies, how w is drawn, and how it reaches the model.

Variants (clp_pcm.md §1.3): `full` conditions every LoRA target; `attn` the attention projections (the MLP
LoRA is shared); `logit` a LoRA on the output layer (everything else shared; the LoRA delta acts on the output
projection only, so tied input embeddings stay untouched); `prompt` writes w into the prompt of one shared LoRA.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace

import torch
from peft import PeftModel

from steerable.backbone.adapters import add_adapter, wrap_lora
from steerable.backbone.mixing import AdapterMixer, copy_adapter
from steerable.config.schema import ConfigError, LoraConfig
from steerable.generation.hf import RowContext

VARIANTS = ("full", "attn", "logit", "prompt")
SHARED = "shared"


def objective_adapter(index: int) -> str:
    return f"objective_{index}"


def split_targets(
    variant: str, targets: Sequence[str], attention: Sequence[str], output: str
) -> tuple[list[str], list[str]]:
    """(shared, conditioned) LoRA target modules of a variant."""
    targets = list(targets)
    if variant == "full":
        return [], targets
    if variant == "attn":
        conditioned = [t for t in targets if t in attention]
        if not conditioned:
            raise ConfigError(
                f"method.variant=attn: none of model.lora.target_modules {targets} is an attention projection "
                f"(method.attention_modules={list(attention)})"
            )
        return [t for t in targets if t not in attention], conditioned
    if variant == "logit":
        return targets, [output]
    if variant == "prompt":
        return targets, []
    raise ConfigError(f"method.variant must be one of {VARIANTS}, got {variant!r}")


def build_conditioned_policy(
    base: torch.nn.Module,
    lora: LoraConfig,
    shared: list[str],
    conditioned: list[str],
    copies: int,
    keep_shared: bool = True,
) -> tuple[PeftModel, AdapterMixer | None]:
    """The base with a shared adapter and/or `copies` identical conditioned adapters, all trainable.

    `keep_shared=False` (a shared adapter that would never train, `method.shared_lr_scale=0`) removes the shared
    adapter once the copies exist. At its zero start it adds exactly nothing, so the policy is the same, but
    every forward skips its low-rank products, and for `logit` no parameter below the output layer needs a
    gradient, so backward stops there. It is created first all the same: the copies' initialisation then draws
    the same random numbers as in a run that keeps it."""
    names = [objective_adapter(i) for i in range(copies)] if conditioned else []
    first = SHARED if shared else names[0]
    model = wrap_lora(base, replace(lora, target_modules=shared or conditioned), adapter_name=first)
    for name in names:
        if name != first:
            add_adapter(model, name, replace(lora, target_modules=conditioned))
    for name in names[1:]:
        copy_adapter(model, names[0], name)
    if shared and names and not keep_shared:
        model.set_adapter(names[0])  # as in a model built without one (PEFT's disable_adapter reads it)
        model.delete_adapter(SHARED)
    if not names:
        return model, None
    mixer = AdapterMixer(model, names)
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)  # set_adapter([...]) may leave later adapters frozen
    return model, mixer


# ------------------------------------------------------------------------------------------- weightings


class WeightSampler:
    """Weightings on the simplex: Dirichlet(concentration), one per example or one per batch (§1.4). `mirrored`
    (not the paper) draws one w per prompt and adds its reverse: 2n rows, prompt i's at 2i and 2i + 1. The
    reverse of a symmetric Dirichlet draw is a draw too, and every step then weighs each objective alike and
    shows each prompt under opposite weightings, which is the only contrast a prompt-conditioned policy
    learns to read w from."""

    def __init__(self, num_objectives: int, concentration: float, per: str) -> None:
        self.dirichlet = torch.distributions.Dirichlet(torch.full((num_objectives,), float(concentration)))
        self.per = per

    def __call__(self, n: int) -> torch.Tensor:
        if self.per == "batch":
            return self.dirichlet.sample().expand(n, -1).clone()
        drawn = self.dirichlet.sample((n,))
        if self.per == "mirrored":
            return torch.stack([drawn, drawn.flip(-1)], dim=1).reshape(2 * n, -1)
        return drawn


def weights_text(names: Sequence[str], weights: Sequence[float]) -> str:
    """The one fixed textual format of w for prompt conditioning."""
    return "Reward weights: " + ", ".join(f"{n}={float(w):.2f}" for n, w in zip(names, weights, strict=True))


def with_weights_in_prompt(
    messages: list[dict], names: Sequence[str], weights: Sequence[float]
) -> list[dict]:
    line = weights_text(names, weights)
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{messages[0]['content']}\n{line}"}, *messages[1:]]
    return [{"role": "system", "content": line}, *messages]


class ParameterConditioning:
    """w mixes the conditioned adapter copies per example. With `stacked_sampling` (training), sampling uses
    the mixer's stacked form where the adapters allow it: one low-rank product per layer for all copies instead
    of PEFT's loop per adapter, the same policy up to float rounding and faster decoding on a CPU
    (benchmarks/rl_step.py). Evaluation keeps the per-adapter form, so recorded replies stay reproducible."""

    def __init__(
        self, mixer: AdapterMixer, draw: WeightSampler | None = None, stacked_sampling: bool = False
    ) -> None:
        self.mixer = mixer
        self.num_objectives = len(mixer.names)
        self._draw = draw
        stacked = stacked_sampling and mixer.supports_stacking()
        self._sample_mixed = mixer.stacked if stacked else mixer.weighted

    def draw(self, n: int) -> torch.Tensor:
        return self._draw(n)

    def prompt(self, messages: list[dict], weights: torch.Tensor) -> list[dict]:
        return messages

    def rows(self, weights: torch.Tensor) -> RowContext:
        def context(indices: list[int], n: int) -> AbstractContextManager:
            return self._sample_mixed(weights[indices].repeat_interleave(n, dim=0))

        return context

    def forward(self, row_weights: torch.Tensor) -> AbstractContextManager:
        return self.mixer.weighted(row_weights)

    def signal(self) -> dict[str, float]:
        return {"diag/copy_spread": self.mixer.spread()}


class PromptConditioning:
    """w is written into the prompt of one shared policy."""

    def __init__(self, names: Sequence[str], draw: WeightSampler | None = None) -> None:
        self.names = list(names)
        self.num_objectives = len(self.names)
        self._draw = draw

    def draw(self, n: int) -> torch.Tensor:
        return self._draw(n)

    def prompt(self, messages: list[dict], weights: torch.Tensor) -> list[dict]:
        return with_weights_in_prompt(messages, self.names, weights.tolist())

    def rows(self, weights: torch.Tensor) -> RowContext | None:
        return None

    def forward(self, row_weights: torch.Tensor) -> AbstractContextManager:
        return nullcontext()

    def signal(self) -> dict[str, float]:
        return {}  # w acts through the prompt text only
