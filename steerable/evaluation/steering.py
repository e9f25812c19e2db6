"""The steering metrics of one leaderboard row, each with a percentile bootstrap 95% interval over prompts.

Given a row's cells (scores [C, P, K], requested weights [C, K]) every statistic is a function of which prompts
are in the sample, so one resampling of prompt indices drives them all: per axis Spearman ρ over every reply
and ρ of the per-request means, the fraction of grid steps whose mean moves the requested way and the spread
(mean at the highest requested weight minus at the lowest); the hypervolume of the per-request means against
the suite's fixed reference (`metrics.hypervolume`); the reward at the default request; the log-ratio to the
base model; the mean pairwise METEOR of the default request's replies. A row that cannot be steered along an
axis (a fixed policy: one point, or no requested weights) gets None there, never a number.

An arm trained on several seeds is one row of their means: every statistic reads the mean over the seeds (the
per-request means average the seeds' replies), and each bootstrap resample draws the seeds with replacement
as well as the prompts (a two-level bootstrap), so the intervals cover seed-to-seed training variance too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from steerable.evaluation.answers import Cell
from steerable.evaluation.meteor import meteor
from steerable.evaluation.metrics import hypervolume, spearman, steerability

Stats = dict[str, float | None]


@dataclass(frozen=True)
class Interval:
    """A statistic on all prompts and its bootstrap 95% interval; None = not defined for this row."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.3g} [{self.low:.3g}, {self.high:.3g}]"


def with_intervals(
    stat: Callable[[np.ndarray, np.ndarray], Stats], prompts: int, n_boot: int, seed: int, seeds: int = 1
) -> dict:
    """`stat(prompt indices, seed indices) -> {name: value}` on every prompt and seed, and the 2.5/97.5
    percentiles of each value over `n_boot` resamples with replacement of the prompts and, when the row has
    several seeds, of the seeds; a value undefined on all prompts stays None."""
    full = finite_stats(stat(np.arange(prompts), np.arange(seeds)))
    rng = np.random.default_rng(seed)
    boots = [stat(rng.integers(0, prompts, prompts), _seed_draw(rng, seeds)) for _ in range(n_boot)]
    out: dict[str, Interval | None] = {}
    for name, value in full.items():
        if value is None:
            out[name] = None
            continue
        samples = np.array([b[name] for b in boots if b[name] is not None], dtype=float)
        samples = samples[np.isfinite(samples)]
        low, high = np.quantile(samples, [0.025, 0.975]) if samples.size else (np.nan, np.nan)
        out[name] = Interval(float(value), float(low), float(high))
    return out


def finite_stats(stats: Stats) -> Stats:
    """A statistic that is not a finite number (ρ of a flat dial) is None: not defined for the row."""
    return {k: v if v is not None and np.isfinite(v) else None for k, v in stats.items()}


def _seed_draw(rng: np.random.Generator, seeds: int) -> np.ndarray:
    """Seeds drawn with replacement; one seed draws nothing, so a one-seed row's intervals stay as they were."""
    return rng.integers(0, seeds, seeds) if seeds > 1 else np.arange(1)


def requested(cells: Sequence[Cell], names: list[str]) -> np.ndarray | None:
    """[C, K] requested weights, or None when some cell has no dial position (a fixed policy)."""
    if any(c.weights is None for c in cells):
        return None
    return np.array([[c.weights[n] for n in names] for c in cells], dtype=float)


def default_index(cells: Sequence[Cell], default: dict[str, float], names: list[str]) -> int:
    """The cell of the default request; for a sweep of fixed policies the one trained nearest to it."""
    flagged = [i for i, c in enumerate(cells) if c.default]
    weights = requested(cells, names)
    if weights is None or len(flagged) == 1:
        return flagged[0] if flagged else 0
    target = np.array([default[n] for n in names])
    return int(np.argmin(np.abs(weights - target).sum(1)))


def row_statistic(
    replicas: Sequence[Sequence[Cell]],
    names: list[str],
    reference: Sequence[float],
    default: dict[str, float],
) -> Callable[[np.ndarray, np.ndarray], Stats]:
    """The function of prompt and seed indices that computes every metric of a row (see the module docstring).
    `replicas`: the row's cells for each seed, every seed answering the same requests in the same order."""
    scores = np.stack([[c.scores for c in cells] for cells in replicas])  # [S, C, P, K]
    cells = replicas[0]
    weights = requested(cells, names)
    home = default_index(cells, default, names)
    ratios = [r[home].log_ratio for r in replicas]
    log_ratio = np.stack(ratios) if all(r is not None for r in ratios) else None  # [S, P]
    pairwise = [meteor_matrix(r[home].texts) for r in replicas]

    def stat(idx: np.ndarray, seeds: np.ndarray) -> Stats:
        chosen = scores[seeds][:, :, idx]  # [S', C, P', K]
        means = chosen.mean((0, 2))  # [C, K]
        replies = chosen.transpose(1, 0, 2, 3).reshape(len(cells), -1, len(names))  # [C, S'P', K]
        out: Stats = {"hypervolume": hypervolume(means, reference)}
        for k, name in enumerate(names):
            out[f"default/{name}"] = float(replies[home, :, k].mean())
            out.update(axis_stats(name, weights, replies[:, :, k], means[:, k], k))
        out["kl"] = float(log_ratio[seeds][:, idx].mean()) if log_ratio is not None else None
        per_seed = [mean_meteor(pairwise[s], idx) for s in seeds]
        out["meteor"] = None if None in per_seed else float(np.mean(per_seed))
        return out

    return stat


def axis_stats(name: str, weights, replies: np.ndarray, means: np.ndarray, k: int) -> Stats:
    """ρ over replies and of means, monotone fraction and spread along one axis (None: not steerable)."""
    keys = [f"{m}/{name}" for m in ("rho_replies", "rho_means", "monotone", "spread")]
    if weights is None or np.unique(weights[:, k]).size < 2:
        return dict.fromkeys(keys)
    dial = weights[:, k]
    values = [
        spearman(np.repeat(dial, replies.shape[1]), replies.reshape(-1)),
        spearman(dial, means),
        monotone_fraction(dial, means),
        steerability(dial, means).spread,
    ]
    return dict(zip(keys, values, strict=True))


def monotone_fraction(dial: np.ndarray, means: np.ndarray) -> float:
    """The fraction of consecutive steps up the dial (per-value means, sorted by requested value) whose mean
    rises: a step that does not move counts against it, so a dead dial scores 0, not 1."""
    values, inverse = np.unique(dial, return_inverse=True)
    curve = np.bincount(inverse, weights=means) / np.bincount(inverse)
    return float(np.mean(np.diff(curve) > 0)) if values.size > 1 else float("nan")


def meteor_matrix(texts: list[str]) -> np.ndarray:
    """METEOR of every ordered pair of replies to different prompts (the diagonal is unused)."""
    n = len(texts)
    out = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(n):
            if i != j:
                out[i, j] = meteor(texts[i], texts[j])
    return out


def mean_meteor(pairwise: np.ndarray, idx: np.ndarray) -> float | None:
    """Mean METEOR over ordered pairs of the sampled prompts that are different prompts."""
    a, b = np.meshgrid(idx, idx, indexing="ij")
    keep = a != b
    return float(pairwise[a[keep], b[keep]].mean()) if keep.any() else None
