"""Several LoRA adapters on one base model, mixed per example: out = base(x) + Σ_i w_i · B_i A_i x.

CLP's conditioned copies and Rewarded Soups' interpolation are named PEFT adapters on one shared base, all active
at once; a forward hook on each adapter's `lora_B` scales that adapter's output by its weight for each row of
the batch. Mixing the outputs is mixing ΔW_i = B_i A_i (what parameter interpolation means); mixing A and B
separately would not be, since the product is bilinear (clp_pcm.md §1.8).

For decoding, `stacked` computes the same sum with two matmuls per layer over all adapters at once,
B_cat · (w ⊙ A_cat x), instead of one pair per adapter plus a hook: PEFT's per-adapter loop dominates a
decode step on a CPU (benchmarks/pcm_decode.py).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from peft import PeftModel
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.lora import LoraLayer


class AdapterMixer:
    """Weights `names` (adapters of `model`) per example inside `with mixer.weighted(w):` (w: [batch, m])."""

    def __init__(self, model: PeftModel, names: Sequence[str]) -> None:
        self.model = model
        self.names = list(names)
        self.weights: torch.Tensor | None = None
        self.handles = []
        found = set()
        for module in model.modules():
            if isinstance(module, LoraLayer):
                for index, name in enumerate(self.names):
                    if name in module.lora_B:
                        found.add(name)
                        hook = partial(self._scale, index)
                        self.handles.append(module.lora_B[name].register_forward_hook(hook))
        missing = [n for n in self.names if n not in found]
        if missing:
            raise ValueError(f"adapters {missing} are not in the model (it has {list(model.peft_config)})")
        model.base_model.set_adapter([*self.shared_adapters(), *self.names])

    def shared_adapters(self) -> list[str]:
        """Adapters that are always on with weight 1 (CLP's unconditioned parameters)."""
        return [n for n in self.model.peft_config if n not in self.names]

    def _scale(self, index: int, module: torch.nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        if self.weights is None:
            raise RuntimeError(
                "mixed adapters need weights: run the forward inside `with mixer.weighted(w):`"
            )
        if self.weights.shape[0] != output.shape[0]:
            raise ValueError(f"{self.weights.shape[0]} weight rows for a batch of {output.shape[0]}")
        column = self.weights[:, index].to(device=output.device, dtype=output.dtype)
        return output * column.view(-1, *([1] * (output.dim() - 1)))

    def _checked(self, weights: torch.Tensor) -> torch.Tensor:
        weights = torch.as_tensor(weights, dtype=torch.float32)
        if weights.ndim != 2 or weights.shape[1] != len(self.names):
            raise ValueError(f"weights must be [batch, {len(self.names)}], got {tuple(weights.shape)}")
        return weights

    @contextmanager
    def weighted(self, weights: torch.Tensor) -> Iterator[None]:
        weights = self._checked(weights)
        previous, self.weights = self.weights, weights
        try:
            yield
        finally:
            self.weights = previous

    @contextmanager
    def stacked(self, weights: torch.Tensor) -> Iterator[None]:
        """Inference-only `weighted`: PEFT's adapters are switched off and each LoRA linear layer adds
        Σ_i w_i·s_i·B_i A_i x (shared adapters with weight 1) as one stacked low-rank product."""
        weights = self._checked(weights)
        if self.model.training:
            raise RuntimeError(
                "stacked mixing is for inference: call model.eval() first (dropout is skipped)"
            )
        adapters = [*self.shared_adapters(), *self.names]
        full = torch.cat([torch.ones(weights.shape[0], len(adapters) - len(self.names)), weights], dim=1)
        hooks = [
            module.register_forward_hook(_StackedDelta(module, adapters, full))
            for module in self._lora_layers(adapters)
        ]
        trainable = {name: p.requires_grad for name, p in self.model.named_parameters()}
        try:
            with self.model.disable_adapter():
                yield
        finally:
            for hook in hooks:
                hook.remove()
            for name, p in self.model.named_parameters():
                p.requires_grad_(trainable[name])

    def supports_stacking(self) -> bool:
        """`stacked` covers plain LoRA on linear layers (no DoRA, no LoRA on embeddings)."""
        adapters = [*self.shared_adapters(), *self.names]
        return all(_stackable(module, adapters) for module in self._lora_layers(adapters))

    def _lora_layers(self, adapters: list[str]) -> Iterator[LoraLayer]:
        return (
            m
            for m in self.model.modules()
            if isinstance(m, LoraLayer) and any(a in m.lora_A for a in adapters)
        )

    @torch.no_grad()
    def spread(self) -> float:
        """How far the mixed adapters' updates ΔW_i = s_i·B_i A_i are apart: sqrt(Σ ||ΔW_i − mean ΔW||² /
        Σ ||ΔW_i||²) over every LoRA layer; 0 while the copies are identical (CLP at step 0), so no weighting
        can change the output yet."""
        apart = total = 0.0
        for module in self._lora_layers(self.names):
            deltas = [
                (module.lora_B[n].weight @ module.lora_A[n].weight).float() * module.scaling[n]
                for n in self.names
                if n in module.lora_A
            ]
            mean = sum(deltas) / len(deltas)
            apart += sum(float((d - mean).pow(2).sum()) for d in deltas)
            total += sum(float(d.pow(2).sum()) for d in deltas)
        return math.sqrt(apart / total) if total > 0 else 0.0

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


def _stackable(module: torch.nn.Module, adapters: list[str]) -> bool:
    return isinstance(module, LoraLinear) and not any(module.use_dora.get(a, False) for a in adapters)


class _StackedDelta:
    """Forward hook for one LoRA linear layer: output + B_cat · (w_cols ⊙ A_cat x)."""

    def __init__(self, module: LoraLinear, adapters: list[str], weights: torch.Tensor) -> None:
        present = [i for i, a in enumerate(adapters) if a in module.lora_A]
        if not _stackable(module, adapters):
            raise ValueError(
                f"stacked mixing supports plain LoRA on linear layers, not {type(module).__name__}"
            )
        down = module.lora_A[adapters[present[0]]].weight
        device_type = down.device.type
        # cast once here, not in every call (autocast would recast these weights at every decode step)
        dtype = (
            torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else down.dtype
        )
        with torch.no_grad():
            self.down = torch.cat([module.lora_A[adapters[i]].weight for i in present], dim=0).to(dtype)
            self.up = torch.cat(
                [module.lora_B[adapters[i]].weight * module.scaling[adapters[i]] for i in present], dim=1
            ).to(dtype)
        ranks = torch.tensor([module.lora_A[adapters[i]].weight.shape[0] for i in present])
        self.row_weights = weights[:, present].repeat_interleave(ranks, dim=1).to(down.device, dtype)

    def __call__(self, module: torch.nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        if self.row_weights.shape[0] != x.shape[0]:
            raise ValueError(f"{self.row_weights.shape[0]} weight rows for a batch of {x.shape[0]}")
        hidden = F.linear(x.to(self.down.dtype), self.down)
        hidden = hidden * self.row_weights.view(x.shape[0], *([1] * (hidden.dim() - 2)), -1).to(hidden.dtype)
        return output + F.linear(hidden, self.up).to(output.dtype)


def copy_adapter(model: PeftModel, source: str, target: str) -> None:
    """Make adapter `target` an exact copy of `source` (CLP: every copy starts identical, so at step 0 every
    weighting gives the same policy)."""
    state = dict(model.named_parameters())
    with torch.no_grad():
        for name, param in state.items():
            if f".{target}." in name:
                param.copy_(state[name.replace(f".{target}.", f".{source}.")])


def weighted_adapter(mixer: AdapterMixer, weights: Sequence[float], name: str) -> PeftModel:
    """A copy of the model with one LoRA adapter `name` equal to the mixture at one weighting: the adapters'
    ranks concatenated (PEFT's `combination_type="cat"`: A rows scaled by w_i·s_i, scaling 1), shared adapters at
    weight 1; every other adapter deleted. Exact, unlike averaging A and B separately (the product is bilinear)."""
    if len(weights) != len(mixer.names):
        raise ValueError(f"{len(weights)} weights for the {len(mixer.names)} adapters {mixer.names}")
    shared, mixed = mixer.shared_adapters(), [*mixer.names]
    work = copy.deepcopy(mixer.model)
    building = f"{name}__weighted"
    work.base_model.add_weighted_adapter(
        [*shared, *mixed], [1.0] * len(shared) + [float(w) for w in weights], building, combination_type="cat"
    )
    work.set_adapter(building)
    for old in [*shared, *mixed]:
        work.delete_adapter(old)
    # now `name` is free (it may have been one of the old adapters): copy under it (cat of one at weight 1)
    work.base_model.add_weighted_adapter([building], [1.0], name, combination_type="cat")
    work.set_adapter(name)
    work.delete_adapter(building)
    return work
