"""The Preference Control Model and its REBEL objective (clp_pcm.md §2.3-2.5).

The controller is a small causal LM whose output layer is replaced by an n-way linear head: reading
[preference description; prompt; response] causally, the hidden state before response token t gives the mixing
weights α(t) over the experts, so one forward pass yields the weights for every position of a response.

Training never runs the experts again: the log-prob of each sampled token under each expert is cached at sampling
time, and the mixture's log-likelihood is Σ_t logsumexp_i(log α_i(t) + log p_i(y_t)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from steerable.generation.logprobs import position_ids_from_mask
from steerable.training.losses import causal_lm


class PreferenceController(nn.Module):
    """A causal LM trunk (its own weights, e.g. a small model or a LoRA-adapted copy) with an n-way softmax head."""

    def __init__(self, backbone: nn.Module, num_experts: int) -> None:
        super().__init__()
        self.backbone = backbone
        hidden = causal_lm(backbone).config.hidden_size
        self.head = nn.Linear(hidden, num_experts)
        nn.init.zeros_(
            self.head.weight
        )  # uniform weights at the start: the untrained controller is MPD-Uniform
        nn.init.zeros_(self.head.bias)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, active: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log α as [B, T, n] at every position; `active` ([B, n] bool) masks experts a preference does not use."""
        trunk = causal_lm(self.backbone).get_decoder()
        hidden = trunk(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
        ).last_hidden_state
        logits = self.head(hidden).float()
        if active is not None:
            logits = logits.masked_fill(~active[:, None, :], float("-inf"))
        return logits.log_softmax(-1)


def aligned_log_alpha(log_alpha: torch.Tensor) -> torch.Tensor:
    """Shift [B, T, n] so that position t holds the weights for generating token t (from the state at t-1)."""
    return F.pad(log_alpha[:, :-1], (0, 0, 1, 0))


def mixture_log_likelihood(
    log_alpha: torch.Tensor, expert_log_probs: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """[B] Σ_t log Σ_i α_i(t) p_i(y_t) over response positions; all inputs aligned with the token positions."""
    per_token = torch.logsumexp(log_alpha + expert_log_probs, dim=-1)
    return (per_token * response_mask).sum(-1)


def rebel_loss(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, reward: torch.Tensor, eta: float = 1.0
) -> torch.Tensor:
    """REBEL with rows (2i, 2i+1) as the two responses to one (prompt, preference), as in the reference code:
    ((log π/π_old)(y) - (log π/π_old)(y') - eta·(R(y) - R(y')))², averaged over pairs."""
    if log_prob.shape[0] % 2:
        raise ValueError(
            "REBEL needs an even number of rows: pairs of responses to the same prompt and preference"
        )
    ratio = log_prob - old_log_prob
    difference = ratio[0::2] - ratio[1::2] - eta * (reward[0::2] - reward[1::2])
    return (difference**2).mean()
