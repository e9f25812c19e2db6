"""One transformers backbone shared by every method: loading, LoRA adapters, reference policy, export."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from steerable.backbone.adapters import load_adapter, wrap_lora
from steerable.backbone.loading import load_base_model, load_tokenizer
from steerable.config.schema import ModelConfig


def load_backbone(
    cfg: ModelConfig, adapter_dir: Path | None = None, trainable: bool = False
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """Model and tokenizer ready to train (fresh LoRA when enabled) or to use (a saved adapter/full model);
    `trainable` loads a saved adapter to train it further."""
    tokenizer = load_tokenizer(cfg)
    if adapter_dir is not None and not (Path(adapter_dir) / "adapter_config.json").is_file():
        # A full fine-tuned model saved by this project: load it as the model itself.
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(str(adapter_dir)), tokenizer
    base = load_base_model(cfg, tokenizer)
    if adapter_dir is not None:
        return load_adapter(base, Path(adapter_dir), trainable=trainable), tokenizer
    if cfg.lora.enabled:
        return wrap_lora(base, cfg.lora), tokenizer
    return base, tokenizer
