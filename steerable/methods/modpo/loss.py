"""The MODPO objective (Zhou et al. 2024, Eq. for L_MODPO), re-derived here.

For the target objective k with weight w_k, the other objectives' rewards r_{-k} with weights w_{-k}, and
Δ(y) = log π(y|x) - log π_ref(y|x):

    h = (1/w_k) · ( β·(Δ(y_c) - Δ(y_r)) - w_{-k}ᵀ (r_{-k}(x, y_c) - r_{-k}(x, y_r)) )
    loss = -log σ(h)

So with w_k = 1 and no other objective it is DPO's sigmoid loss; the margin asks the policy's implicit reward
for the target to explain only what the other objectives do not. (1/w_k)(β·Δ(y) - w_{-k}ᵀ r_{-k}(x, y)) is each
reply's implicit target reward, logged like DPO's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from steerable.methods.dpo.loss import DPOTerms, PairLogprobs


def modpo_loss(
    logprobs: PairLogprobs,
    margin_chosen: torch.Tensor,
    margin_rejected: torch.Tensor,
    target_weight: float,
    other_weights: torch.Tensor,
    beta: float,
) -> DPOTerms:
    """Per-pair MODPO losses: log-probs [B] each, margin rewards [B, K-1], `other_weights` [K-1]."""
    lp, w = logprobs, other_weights.to(margin_chosen)
    chosen = (beta * (lp.policy_chosen - lp.reference_chosen) - margin_chosen @ w) / target_weight
    rejected = (beta * (lp.policy_rejected - lp.reference_rejected) - margin_rejected @ w) / target_weight
    losses = -F.logsigmoid(chosen - rejected)
    return DPOTerms(losses, chosen.detach(), rejected.detach())
