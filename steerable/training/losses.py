"""Token-level losses that never materialise logits for positions without a target.

A causal LM's output layer is the biggest activation in SFT on small models (SmolLM2: 49,152 logits per
token). HF's `labels=` path computes and upcasts logits for every position, prompt and padding included;
here the output layer runs only where a label exists, which gives the same loss for less memory and time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from peft import PeftModel

from steerable.training.sharding import is_sharded

IGNORE_INDEX = -100


def causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a PEFT wrapper (LoRA layers stay in place): its decoder and output layer."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def target_hidden_states(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states that predict each target token, and those targets ([N, H], [N])."""
    lm = causal_lm(model)
    hidden = lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    shifted_labels = labels[:, 1:]
    keep = shifted_labels != IGNORE_INDEX
    return hidden[:, :-1][keep], shifted_labels[keep]


def plain_output_layer(lm: torch.nn.Module) -> bool:
    """Models that rescale or soft-cap logits after the output layer (Gemma 2, Cohere) use HF's own loss."""
    config = lm.config
    return (
        not getattr(config, "final_logit_softcapping", None) and getattr(config, "logit_scale", None) is None
    )


# The old private names, for branches written before the rename; remove once merged.


def summed_lm_loss(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy over target tokens and their number: a loss that data-parallel ranks
    and accumulated micro-batches can normalise by the global token count (see CausalLMModule)."""
    count = (labels[:, 1:] != IGNORE_INDEX).sum()
    if not plain_output_layer(causal_lm(model)) or is_sharded(model):
        # The model's own forward: it applies soft-capping, and under FSDP2 only the root's forward gathers
        # the root's weights (embeddings, tied output layer); calling the decoder directly would not.
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
        keep = labels[:, 1:] != IGNORE_INDEX
        return F.cross_entropy(logits[keep].float(), labels[:, 1:][keep], reduction="sum"), count
    hidden, targets = target_hidden_states(model, input_ids, attention_mask, labels)
    logits = causal_lm(model).get_output_embeddings()(hidden).float()
    return F.cross_entropy(logits, targets, reduction="sum"), count


def masked_lm_loss(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Mean next-token cross-entropy over target tokens, equal to HF's `model(labels=...).loss`."""
    if not plain_output_layer(causal_lm(model)):
        return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    hidden, targets = target_hidden_states(model, input_ids, attention_mask, labels)
    logits = causal_lm(model).get_output_embeddings()(hidden).float()
    return F.cross_entropy(logits, targets)
