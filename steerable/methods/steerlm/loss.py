"""SteerLM 2.0 (HelpSteer2 paper §4.5; spec A8): fit Q_θ(y|a,x) to P(y|a,x) ∝ P(a|x,y)·P(y|x) by minimising
KL(P || Q_θ) with importance-weighted samples from the current conditioned policy Q'.

Per (prompt x, requested attributes a) a group of n replies y_i ~ Q'(·|a,x) gets
    w'_i = softmax_i( log P(a|x,y_i) + log P(y_i|x) − log Q'(y_i|a,x) )     target weights (fixed)
    b'_i = softmax_i( log Q_θ(y_i|a,x) − log Q'(y_i|a,x) )                    baseline (current θ, no gradient)
    loss = Σ_i (w'_i − b'_i) · NLL_θ(y_i) / mean reply length of the group,  so ∇ ≈ −Σ (w' − b') ∇log Q_θ
P(y|x) is the unlabelled SFT baseline, P(a|x,y) the attribute model read as a Beta distribution over each
attribute's value bins, and Q' both samples and initialises Q_θ. `iterations` resamples from the updated policy.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import beta as beta_distribution


def label_logprob(
    predictions: np.ndarray, labels: np.ndarray, value_range: tuple[int, int], concentration: float = 24.0
) -> np.ndarray:
    """log P(a|x,y) summed over attributes: each prediction r (on the label scale) becomes Beta(c·r', c − c·r')
    with r' = r scaled to [0, 1]; label value n owns the bin [n/K, (n+1)/K) of K equal bins (spec A8)."""
    low, high = value_range
    bins = high - low + 1
    scaled = np.clip((np.asarray(predictions, dtype=float) - low) / (high - low), 1e-4, 1 - 1e-4)
    a = concentration * scaled
    b = concentration - a
    index = np.asarray(labels) - low
    mass = beta_distribution.cdf((index + 1) / bins, a, b) - beta_distribution.cdf(index / bins, a, b)
    return np.log(np.clip(mass, 1e-12, None)).sum(axis=-1)


def target_weights(
    log_attributes: torch.Tensor, log_prior: torch.Tensor, log_sampler: torch.Tensor
) -> torch.Tensor:
    """w' per group ([G, n] inputs): self-normalised importance weights of P(y|a,x) against the sampler Q'."""
    return torch.softmax(log_attributes + log_prior - log_sampler, dim=-1)


def steerlm2_loss(
    sequence_logp: torch.Tensor, reply_tokens: torch.Tensor, log_sampler: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, distance) for [G, n] groups: sequence_logp = log Q_θ(y_i|a,x) with gradient."""
    baseline = torch.softmax(sequence_logp.detach() - log_sampler, dim=-1)
    scale = reply_tokens.float().mean(dim=-1).clamp_min(1.0)
    loss = (((weights - baseline) * -sequence_logp).sum(dim=-1) / scale).mean()
    distance = (torch.xlogy(weights, weights) - weights * baseline.clamp_min(1e-30).log()).sum(dim=-1).mean()
    return loss, distance
