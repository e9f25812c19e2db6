"""The scoring models' losses: Bradley-Terry on pair score differences, and a mean squared error that skips
missing labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from steerable.methods.reward_models.data import MISSING_LABEL


def bradley_terry_loss(scores: torch.Tensor, margin: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """scores [2B, 1] with chosen first: loss -log σ(r_c - r_r - margin) and pairwise accuracy."""
    chosen, rejected = scores[:, 0].chunk(2)
    diff = chosen - rejected
    return -F.logsigmoid(diff - margin).mean(), (diff > 0).float().mean()


def masked_mse(predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """MSE over labelled attributes only: -100 entries add nothing to the loss or its gradient."""
    mask = labels != MISSING_LABEL
    if not mask.any():
        raise ValueError("a batch has no labelled attribute; every sample needs at least one label")
    errors = (predictions - torch.where(mask, labels, torch.zeros_like(labels))) ** 2
    return (errors * mask).sum() / mask.sum()
