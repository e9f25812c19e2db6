"""The DPO objective and the sequence log-probabilities it compares.

With h = (log π(y_c|x) - log π_ref(y_c|x)) - (log π(y_r|x) - log π_ref(y_r|x)):

* sigmoid (Rafailov et al. 2023; cDPO label smoothing ε): -(1-ε)·log σ(β·h) - ε·log σ(-β·h)
* ipo (Azar et al. 2023): (h - 1/(2β))²

β·(log π - log π_ref) of a reply is DPO's implicit reward; its chosen-minus-rejected difference is the margin.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from steerable.generation.logprobs import token_logprobs
from steerable.training.losses import IGNORE_INDEX, causal_lm, plain_output_layer, target_hidden_states
from steerable.training.sharding import is_sharded


@dataclass
class DPOTerms:
    """Per-pair losses (differentiable) and the implicit rewards of both replies (detached)."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor

    def metrics(self) -> dict[str, torch.Tensor]:
        """Batch means, logged as train/rewards/* and val/rewards/*."""
        margins = self.chosen_rewards - self.rejected_rewards
        return {
            "rewards/chosen": self.chosen_rewards.mean(),
            "rewards/rejected": self.rejected_rewards.mean(),
            "rewards/margins": margins.mean(),
            "rewards/accuracy": (margins > 0).float().mean(),
        }


@dataclass
class PairLogprobs:
    """The summed (or mean) reply log-probs of B pairs under the policy and the reference ([B] each)."""

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    reference_chosen: torch.Tensor
    reference_rejected: torch.Tensor

    @classmethod
    def of(cls, policy: torch.Tensor, reference: torch.Tensor) -> PairLogprobs:
        """From [2B] rows, the chosen replies first and then the rejected ones (the pair collators' order)."""
        return cls(*policy.chunk(2), *reference.chunk(2))


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> DPOTerms:
    """Per-pair DPO losses from the replies' log-probs under the policy and the reference ([B] each)."""
    chosen_ratio = policy_chosen - reference_chosen
    rejected_ratio = policy_rejected - reference_rejected
    h = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; expected sigmoid or ipo")
    return DPOTerms(losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach())


def reply_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    average: bool = False,
) -> torch.Tensor:
    """Σ log p(token) over each row's labelled (reply) tokens, or their mean, as [rows] in float32.

    Right padding keeps positions 0..n-1 for real tokens, so no position ids are needed. As in the SFT loss,
    the output layer runs only at labelled positions unless the model rescales its logits or is sharded."""
    keep = labels[:, 1:] != IGNORE_INDEX
    if plain_output_layer(causal_lm(model)) and not is_sharded(model):
        hidden, targets = target_hidden_states(model, input_ids, attention_mask, labels)
        logits = causal_lm(model).get_output_embeddings()(hidden)
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1][keep]
        targets = labels[:, 1:][keep]
    per_token = token_logprobs(logits, targets)
    rows = keep.nonzero(as_tuple=True)[0]  # row of each kept position, in the order boolean indexing uses
    sums = torch.zeros(labels.shape[0], dtype=per_token.dtype, device=per_token.device)
    sums = sums.index_add(0, rows, per_token)
    return sums / keep.sum(dim=1).clamp_min(1) if average else sums
