"""Training diagnostics of the multi-objective online loops: does each sampled weighting see its own reward?

Per policy-gradient step the rows are grouped by their weighting's dominant objective (`w_<name>`: the rows whose
largest weight is on <name>). Per group: each objective's normalised reward, the KL estimate, and the correlation
of the advantage with each objective's within-prompt deviation. A weighting reaches the update when the advantage
of the `w_a` rows correlates with objective a more than with the others. Step-wide: the advantage spread, the
KL penalty's spread against the weighted reward's spread, each objective's within-prompt spread (a saturated
reward has none), the share of replies cut by the token budget, and the conditioning's own signal (how far the
adapter copies have moved apart). `methods.fitting.write_diagnostics` plots them over training in the run folder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

PREFIX = "diag"


def _corr(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x - x.mean(), y - y.mean()
    denominator = float(x.norm() * y.norm())
    return float((x * y).sum()) / denominator if denominator > 0 else math.nan


def within_prompt(values: torch.Tensor, k: int) -> torch.Tensor:
    """[N] (rows grouped k per prompt) minus each prompt's mean: what a leave-one-out baseline leaves."""
    grouped = values.view(-1, k)
    return (grouped - grouped.mean(dim=1, keepdim=True)).flatten()


@dataclass
class StepRows:
    """One policy-gradient step's rows (grouped k per prompt): [N, m] weightings and normalised scores, and
    [N] weighted reward, sequence log-ratio to the reference and advantages."""

    row_weights: torch.Tensor
    scores: torch.Tensor
    scalar: torch.Tensor
    log_ratio: torch.Tensor
    advantages: torch.Tensor


def policy_gradient_diagnostics(
    names: Sequence[str], step: StepRows, k: int, kl_coef: float
) -> dict[str, float]:
    """Diagnostics of one step from its rows (see StepRows; rows grouped k per prompt)."""
    row_weights = step.row_weights
    scores, scalar = step.scores.float().cpu(), step.scalar.float().cpu()
    log_ratio, advantages = step.log_ratio.detach().float().cpu(), step.advantages.detach().float().cpu()
    deviations = [within_prompt(scores[:, i], k) for i in range(len(names))]
    metrics = {
        f"{PREFIX}/advantage_std": float(advantages.std()),
        f"{PREFIX}/advantage_abs_mean": float(advantages.abs().mean()),
        f"{PREFIX}/reward_spread": float(within_prompt(scalar, k).std()),
        f"{PREFIX}/kl_penalty_spread": float(within_prompt(kl_coef * log_ratio, k).std()),
        **{f"{PREFIX}/spread_{n}": float(d.std()) for n, d in zip(names, deviations, strict=True)},
    }
    dominant = row_weights.float().cpu().argmax(dim=1)
    for g, group in enumerate(names):
        rows = dominant == g
        key = f"{PREFIX}/w_{group}"
        if (
            not rows.any()
        ):  # NaN, not absent: Lightning would re-log a missing key's value from an earlier step
            metrics |= {f"{key}/{x}": math.nan for x in ("weight", "kl")}
            metrics |= {f"{key}/{x}_{n}": math.nan for n in names for x in ("reward", "advantage_corr")}
            continue
        metrics[f"{key}/weight"] = float(row_weights[rows, g].mean())
        metrics[f"{key}/kl"] = float(log_ratio[rows].mean())
        for i, name in enumerate(names):
            metrics[f"{key}/reward_{name}"] = float(scores[rows, i].mean())
            metrics[f"{key}/advantage_corr_{name}"] = _corr(advantages[rows], deviations[i][rows])
    return metrics


def mixture_diagnostics(
    experts: Sequence[str],
    active: torch.Tensor,
    log_alpha: torch.Tensor,
    response: torch.Tensor,
    terms: Sequence[dict[str, float]],
) -> dict[str, float]:
    """PCM's conditioning signal: per expert (= preference side), its mean mixing weight over the reply tokens of
    the rows whose preference names it, and the mean reward term of that side on those rows. [B, n] active
    experts, [B, T, n] log-weights aligned with the tokens, [B, T] reply mask, one {side: term} per row."""
    alpha = log_alpha.detach().float().exp()
    mask = response.float()
    metrics = {}
    for j, side in enumerate(experts):
        rows = active[:, j].bool()
        metrics[f"{PREFIX}/alpha_{side}"] = metrics[f"{PREFIX}/reward_{side}"] = math.nan  # see above
        if not rows.any():
            continue
        weight = (alpha[rows, :, j] * mask[rows]).sum() / mask[rows].sum().clamp(min=1)
        metrics[f"{PREFIX}/alpha_{side}"] = float(weight)
        values = [t[side] for t, on in zip(terms, rows.tolist(), strict=True) if on and side in t]
        if values:
            metrics[f"{PREFIX}/reward_{side}"] = sum(values) / len(values)
    return metrics
