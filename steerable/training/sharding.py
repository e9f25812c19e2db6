"""FSDP2 for the trained model: each decoder layer is one unit, the rest (embeddings, norm, head) the root.

FSDP2 (`fully_shard`) keeps parameters as DTensors with their own names, so frozen base weights and LoRA
weights share a unit, state dicts keep clean names, and `torch.distributed.checkpoint.state_dict` gathers
them to rank 0. It runs on CPU with gloo as well as on GPUs, which is what lets the tests exercise it.
"""

from __future__ import annotations

import torch


def decoder_layer_classes(model: torch.nn.Module) -> set[type]:
    """The transformer block classes to shard one by one (from HF's `_no_split_modules`)."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or [])
    classes = {type(m) for m in model.modules() if type(m).__name__ in names}
    if not classes:
        raise ValueError("could not find the decoder layer classes to shard (no _no_split_modules)")
    return classes


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def shard_model(model: torch.nn.Module, mesh) -> None:
    """`fully_shard` every decoder layer, then the root; a model sharded before is left as it is (a
    validate-before-fit calls Lightning's configure_model twice)."""
    from torch.distributed.fsdp import fully_shard

    if is_sharded(model):
        return
    layers = decoder_layer_classes(model)
    for module in list(model.modules()):
        if type(module) in layers:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
