"""LoRA through PEFT: wrap, reference policy by disabling adapters, named adapters, save and merged export."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from steerable.config.schema import LoraConfig

DEFAULT_ADAPTER = "default"
# PEFT's "auto" saves the whole embedding matrix beside any adapter whose targets name `lm_head` or
# `embed_tokens` (CLP logit: 113 MB per copy for SmolLM2, the copy itself 1.6 MB). A LoRA never changes those
# weights and nothing here resizes or trains them, so an adapter is saved alone.
ADAPTER_ONLY = {"save_embedding_layers": False}


def peft_lora_config(cfg: LoraConfig) -> PeftLoraConfig:
    return PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        bias=cfg.bias,
        task_type="CAUSAL_LM",
    )


def wrap_lora(model: PreTrainedModel, cfg: LoraConfig, adapter_name: str = DEFAULT_ADAPTER) -> PeftModel:
    """Freeze the base and add one trainable LoRA adapter; more can be added with `add_adapter`."""
    return get_peft_model(model, peft_lora_config(cfg), adapter_name=adapter_name)


def add_adapter(model: PeftModel, name: str, cfg: LoraConfig) -> None:
    """Another named adapter on the same frozen base (PCM experts, CLP conditioned copies)."""
    model.add_adapter(name, peft_lora_config(cfg))


@contextlib.contextmanager
def reference_policy(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The initial model without a second copy in memory: LoRA adapters switched off inside the block.

    Only valid with LoRA; full fine-tuning needs a frozen copy (see `frozen_reference`).
    """
    if not isinstance(model, PeftModel):
        raise TypeError(
            "reference_policy needs a LoRA (PEFT) model; with full fine-tuning keep a frozen copy"
        )
    with model.disable_adapter():
        yield model


def lora_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Every PEFT LoRA layer of `model` (none for a plain model)."""
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def adapters_disabled(model: torch.nn.Module) -> bool:
    """A PEFT model with every LoRA layer switched off (`disable_adapter()`: the reference policy)."""
    layers = lora_layers(model)
    return bool(layers) and all(layer.disable_adapters for layer in layers)


def single_active_adapter(model: torch.nn.Module) -> str | None:
    """The one LoRA adapter a forward applies, or None where merging it would change the model: not a
    PEFT model, adapters switched off (the reference policy), several active, or per-example mixing hooks."""
    if not isinstance(model, PeftModel):
        return None
    layers = lora_layers(model)
    active = model.base_model.active_adapters if layers else []
    if len(active) != 1 or any(layer.disable_adapters or layer.merged for layer in layers):
        return None
    name = active[0]
    if any(name in layer.lora_B and layer.lora_B[name]._forward_hooks for layer in layers):
        return None
    return name


@contextlib.contextmanager
def merged_adapter(model: torch.nn.Module) -> Iterator[bool]:
    """Inside the block the active LoRA update is folded into the base weights, so a decode step runs plain
    linears (PEFT's extra matmuls per layer dominate decoding on CPUs); afterwards the base weights are
    restored bit for bit from a copy (unmerging by subtraction would leave rounding residue). Yields
    whether it merged: nothing happens where `single_active_adapter` says merging is not exact."""
    name = single_active_adapter(model)
    if name is None:
        yield False
        return
    layers = [m for m in lora_layers(model) if name in m.lora_A]
    saved = [
        (tensor, tensor.detach().clone())
        for layer in layers
        for tensor in (layer.get_base_layer().weight, getattr(layer.get_base_layer(), "bias", None))
        if tensor is not None
    ]
    try:
        with torch.no_grad():
            for layer in layers:
                layer.merge(adapter_names=[name])
        yield True
    finally:
        with torch.no_grad():
            for tensor, copy_ in saved:
                tensor.copy_(copy_)
            for layer in layers:
                layer.merged_adapters.clear()


def frozen_reference(model: PreTrainedModel) -> PreTrainedModel:
    """A detached, frozen copy of a fully fine-tuned model's starting point."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


@dataclass
class ParameterCounts:
    trainable: int
    frozen: int

    @property
    def total(self) -> int:
        return self.trainable + self.frozen


def count_parameters(model: torch.nn.Module) -> ParameterCounts:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return ParameterCounts(trainable=trainable, frozen=total - trainable)


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Write into a temporary sibling folder and rename it into place, so a crash never leaves half a folder."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        yield tmp
        if target.exists():
            # the replaced folder goes into a fresh folder of our own first, so nothing else is ever removed
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_model(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    target: Path,
    metadata: dict | None = None,
    state_dict: dict | None = None,
) -> Path:
    """Adapter-only for LoRA models, full weights otherwise; safetensors; `steerable.json` carries metadata.

    `state_dict` overrides the model's own (a gathered copy when the live weights are sharded by FSDP)."""
    with atomic_directory(target) as tmp:
        extra = {} if state_dict is None else {"state_dict": state_dict}
        if isinstance(model, PeftModel):
            extra.update(ADAPTER_ONLY)
        model.save_pretrained(tmp, safe_serialization=True, **extra)
        tokenizer.save_pretrained(tmp)
        meta = {"adapter_only": isinstance(model, PeftModel), **(metadata or {})}
        (tmp / "steerable.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return Path(target)


def load_adapter(
    base: PreTrainedModel, adapter_dir: Path, adapter_name: str = DEFAULT_ADAPTER, trainable: bool = False
) -> PeftModel:
    """The adapter saved in `adapter_dir` on `base`; an unreadable or mismatched one is an error naming it."""
    return load_named_adapters(base, {adapter_name: adapter_dir}, trainable=trainable)


def load_named_adapters(
    base: PreTrainedModel, folders: Mapping[str, Path | str], trainable: bool = False
) -> PeftModel:
    """Several saved adapters on one frozen base, each under its own name (CLP's objectives, PCM's
    experts, Rewarded Soups' ingredients), in the order given; the first is the active one."""
    from steerable.backbone.loading import ModelLoadError

    if not folders:
        raise ValueError("load_named_adapters needs at least one adapter folder")
    model: PeftModel | None = None
    for name, folder in folders.items():
        weights = Path(folder) / "adapter_model.safetensors"
        if not weights.is_file() or not (Path(folder) / "adapter_config.json").is_file():
            raise ModelLoadError(
                f"{folder} holds no adapter (adapter_config.json + adapter_model.safetensors)"
            )
        try:
            if model is None:
                model = PeftModel.from_pretrained(
                    base, str(folder), adapter_name=name, is_trainable=trainable
                )
            else:
                model.load_adapter(str(folder), adapter_name=name, is_trainable=trainable)
        except Exception as err:  # truncated file, wrong shapes, another base model
            reason = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
            raise ModelLoadError(f"cannot load the adapter {weights}: {reason}") from None
    assert model is not None
    return model


def merged_copy(model: torch.nn.Module, adapter_name: str | None = None) -> torch.nn.Module:
    """A plain transformers model with the (named, else active) LoRA update folded into its weights; the
    live model is left as it was. A model without adapters is returned as it is."""
    if not isinstance(model, PeftModel):
        return model
    work = copy.deepcopy(model)
    if adapter_name is not None:
        work.set_adapter(adapter_name)
    return work.merge_and_unload()


def export_merged(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    target: Path,
    adapter_name: str = DEFAULT_ADAPTER,
) -> Path:
    """A plain transformers folder with the LoRA update folded into the weights (loads without peft)."""
    with atomic_directory(target) as tmp:
        merged_copy(model, adapter_name).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return Path(target)
