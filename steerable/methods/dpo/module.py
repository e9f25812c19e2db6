"""The DPO LightningModule and the held-out preference measurement made after training."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from steerable.backbone.adapters import reference_policy
from steerable.generation.hf import eval_mode
from steerable.methods.dpo.loss import DPOTerms, dpo_loss, reply_logprobs
from steerable.methods.dpo.pairs import TokenizedPair
from steerable.training.lm_module import CausalLMModule, OptimSettings


@dataclass(frozen=True)
class Objective:
    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    average_logprobs: bool = False

    @classmethod
    def of(cls, method: Any) -> Objective:
        loss = str(getattr(method.loss_type, "value", method.loss_type))
        return cls(method.beta, loss, method.label_smoothing, method.average_logprobs)


def pair_logprobs(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], average: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(policy, reference) reply log-probs of a PairCollator batch, [2B] each; the reference is the same
    model with its LoRA adapter off, in eval mode and without gradients, so it costs no second copy."""
    args = (batch["input_ids"], batch["attention_mask"], batch["labels"])
    policy = reply_logprobs(model, *args, average=average)
    with torch.no_grad(), reference_policy(model), eval_mode(model):
        reference = reply_logprobs(model, *args, average=average)
    return policy, reference


def pair_terms(model: torch.nn.Module, batch: dict[str, torch.Tensor], objective: Objective) -> DPOTerms:
    policy, reference = pair_logprobs(model, batch, objective.average_logprobs)
    return dpo_loss(
        *policy.chunk(2), *reference.chunk(2), objective.beta, objective.loss_type, objective.label_smoothing
    )


class DPOModule(CausalLMModule):
    """Summed DPO loss over the pairs of a micro-batch, normalised by the global pair count (see
    CausalLMModule). Reference log-probs are computed in the same step: exact, always consistent with the
    batch (truncation, padding, resumed runs) at the price of one extra gradient-free forward."""

    def __init__(self, model: torch.nn.Module, optim: OptimSettings, objective: Objective, **kwargs: Any):
        super().__init__(model, optim, **kwargs)
        self.objective = objective

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        terms = pair_terms(self.model, batch, self.objective)
        pairs = torch.tensor(terms.losses.shape[0], device=terms.losses.device)
        return terms.losses.sum(), pairs, terms.metrics()


def batches(
    pairs: Sequence[TokenizedPair], size: int, collate: Callable
) -> Iterator[dict[str, torch.Tensor]]:
    for start in range(0, len(pairs), size):
        yield collate(list(pairs[start : start + size]))


@torch.no_grad()
def preference_stats(
    model: torch.nn.Module,
    pairs: Sequence[TokenizedPair],
    collate: Callable,
    objective: Objective,
    batch_size: int = 8,
    autocast: AbstractContextManager | None = None,
) -> dict[str, float | int | None]:
    """How the reference (before) and the policy (after) rank each pair's replies, and the policy's implicit
    reward accuracy and margin. Log-prob margins are log π(chosen) - log π(rejected) (summed or averaged as
    the objective says)."""
    device = next(model.parameters()).device
    rows: list[torch.Tensor] = []
    with eval_mode(model), autocast or nullcontext():
        for batch in batches(pairs, batch_size, collate):
            policy, reference = pair_logprobs(
                model, {k: v.to(device) for k, v in batch.items()}, objective.average_logprobs
            )
            rows.append(torch.stack([*policy.float().chunk(2), *reference.float().chunk(2)], dim=1).cpu())
    if not rows:
        return {"pairs": 0}
    pc, pr, rc, rr = torch.cat(rows).unbind(dim=1)
    rewards = objective.beta * ((pc - rc) - (pr - rr))
    return {
        "pairs": len(pc),
        "reference_logp_margin": float((rc - rr).mean()),
        "reference_logp_accuracy": float((rc > rr).float().mean()),
        "policy_logp_margin": float((pc - pr).mean()),
        "policy_logp_accuracy": float((pc > pr).float().mean()),
        "reward_margin": float(rewards.mean()),
        "reward_accuracy": float((rewards > 0).float().mean()),
    }
