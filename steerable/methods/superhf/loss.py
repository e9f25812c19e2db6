"""SuperHF's loss (spec B3): mean cross-entropy over the kept completions' tokens plus kl_coef times the
per-example mean KL(reference || policy) over the full vocabulary, clamped at zero and summed over the minibatch.
Masks come from rendering the chat, never from prompt lengths, so left- or right-padding cannot leak prompt tokens
into the loss (the original code's right-padding assumption, B9.2)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from steerable.backbone.adapters import reference_policy
from steerable.data.tokenize import IGNORE_INDEX
from steerable.training.losses import causal_lm


@dataclass
class KLSettings:
    coef: float = 0.35  # < 0: no KL term
    direction: str = "ref_to_policy"
    aggregation: str = "sum"
    positions: str = "labels"
    clamp: bool = True


def kl_mask(labels: torch.Tensor, positions: str) -> torch.Tensor:
    """Where the KL is taken. `labels`: the code's positions, labels != -100 as they stand (the distributions
    after each completion token); `targets`: the positions whose distribution predicts a completion token."""
    has_label = labels != IGNORE_INDEX
    if positions == "labels":
        return has_label
    return F.pad(has_label[:, 1:], (0, 1), value=False)


def per_example_kl(
    policy_logits: torch.Tensor,
    reference_logits: torch.Tensor,
    rows: torch.Tensor,
    batch: int,
    kl: KLSettings,
) -> torch.Tensor:
    """[batch] mean-over-positions full-vocabulary KL of each example, clamped at 0 when configured.

    `*_logits` are [N, V] at the selected positions, `rows` their example index."""
    logp = policy_logits.float().log_softmax(-1)
    logq = reference_logits.float().log_softmax(-1)
    if kl.direction == "ref_to_policy":
        per_position = (logq.exp() * (logq - logp)).sum(-1)  # KL(ref || policy), torch KLDivLoss(logp, logq)
    else:
        per_position = (logp.exp() * (logp - logq)).sum(-1)
    totals = torch.zeros(batch, dtype=per_position.dtype, device=per_position.device)
    counts = torch.zeros_like(totals)
    totals = totals.index_add(0, rows, per_position)
    counts = counts.index_add(0, rows, torch.ones_like(per_position))
    values = totals / counts.clamp(min=1)
    return values.clamp(min=0) if kl.clamp else values


def _hidden(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return (
        causal_lm(model).get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    )


def _logits(model: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    return causal_lm(model).get_output_embeddings()(hidden)


def superhf_loss(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    kl: KLSettings,
    reference: torch.nn.Module | None = None,
    ce_scale: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """CE (mean over the minibatch's completion tokens) + coef * aggregate of per-example KLs.

    The reference is `model` with its adapter disabled, or `reference` for full fine-tuning. `ce_scale`
    turns the rank's token mean into its share of the mean over every rank's tokens (data parallel)."""
    input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    hidden = _hidden(model, input_ids, attention_mask)
    targets = labels[:, 1:]
    predicts = targets != IGNORE_INDEX
    ce = F.cross_entropy(_logits(model, hidden[:, :-1][predicts]).float(), targets[predicts])
    stats = {"ce": float(ce.detach())}
    ce = ce * ce_scale
    if kl.coef < 0:
        return ce, stats
    where = kl_mask(labels, kl.positions)
    rows = torch.nonzero(where)[:, 0]
    policy_logits = _logits(model, hidden[where])
    with torch.no_grad(), _reference(model, reference) as ref:
        reference_logits = _logits(ref, _hidden(ref, input_ids, attention_mask)[where])
    kls = per_example_kl(policy_logits, reference_logits, rows, input_ids.shape[0], kl)
    aggregate = kls.sum() if kl.aggregation == "sum" else kls.mean()
    stats["kl"] = float(kls.detach().mean())
    return ce + kl.coef * aggregate, stats


def _reference(model: torch.nn.Module, reference: torch.nn.Module | None) -> AbstractContextManager:
    """The frozen copy (full fine-tuning), else the policy with its LoRA adapter off."""
    return nullcontext(reference) if reference is not None else reference_policy(model)
