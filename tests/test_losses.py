"""The target-only loss equals HF's full-logits loss, value and gradients."""

from __future__ import annotations

import torch

from steerable.backbone import load_backbone
from steerable.data.demo import demo_conversations
from steerable.data.tokenize import PaddingCollator, end_of_turn_id, tokenize_dataset
from steerable.training.losses import masked_lm_loss
from tests.test_backbone import perturb_lora, tiny_config


def test_masked_loss_matches_hf_loss_and_gradients() -> None:
    model, tok = load_backbone(tiny_config())
    perturb_lora(model)
    examples, _ = tokenize_dataset(
        tok, [c.messages for c in demo_conversations(6, 0)], 300, "truncate", end_of_turn_id(tok)
    )
    batch = PaddingCollator(tok.pad_token_id)(examples)
    reference = model(**batch).loss
    reference.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    ours = masked_lm_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    ours.backward()
    torch.testing.assert_close(ours, reference)
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, ref_grads[name], msg=name)
