"""Several LoRA adapters on one base model, mixed per example: out = base(x) + Σ_i w_i · B_i A_i x.

CLP's conditioned copies and Rewarded Soups' interpolation are named PEFT adapters on one shared base, all active
at once; a forward hook on each adapter's `lora_B` scales that adapter's output by its weight for each row of
the batch. Mixing the outputs is mixing ΔW_i = B_i A_i (what parameter interpolation means); mixing A and B
separately would not be, since the product is bilinear (clp_pcm.md §1.8).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import torch
from peft import PeftModel
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

    @contextmanager
    def weighted(self, weights: torch.Tensor) -> Iterator[None]:
        weights = torch.as_tensor(weights, dtype=torch.float32)
        if weights.ndim != 2 or weights.shape[1] != len(self.names):
            raise ValueError(f"weights must be [batch, {len(self.names)}], got {tuple(weights.shape)}")
        previous, self.weights = self.weights, weights
        try:
            yield
        finally:
            self.weights = previous

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


def copy_adapter(model: PeftModel, source: str, target: str) -> None:
    """Make adapter `target` an exact copy of `source` (CLP: every copy starts identical, so at step 0 every
    weighting gives the same policy)."""
    state = dict(model.named_parameters())
    with torch.no_grad():
        for name, param in state.items():
            if f".{target}." in name:
                param.copy_(state[name.replace(f".{target}.", f".{source}.")])
