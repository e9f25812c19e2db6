"""Evaluation metrics shared by every method: steerability, Pareto fronts, hypervolume, win rates.

Pure functions over numpy arrays (torch tensors and lists are accepted and converted), so the same numbers come
out no matter which method or script produced the scores. Definitions follow the CLP/PCM evaluation spec
(docs/methods/clp_pcm.md §1.7, §2.6): steerability = Spearman ρ + spread + wrong-way flips along the dial,
hypervolume with one fixed reference point shared by all methods, and paired win rates with bootstrap CIs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "BothOrdersResult",
    "SteerabilityResult",
    "both_orders_win_rate",
    "hypervolume",
    "paired_bootstrap_ci",
    "pareto_front",
    "reward_accuracy",
    "spearman",
    "steerability",
    "win_rate",
]


def _to_numpy(x: Any, dtype: type | None = float) -> np.ndarray:
    """Accept numpy, lists and torch tensors (also ones that require grad or live on a GPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype) if dtype is not None else np.asarray(x)


def _paired_1d(a: Any, b: Any, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Two finite 1-D arrays of equal length: silent broadcasting or NaNs would corrupt a metric unnoticed."""
    x, y = _to_numpy(a).reshape(-1), _to_numpy(b).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same length, got {x.size} and {y.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError(f"{names[0]} and {names[1]} must be finite (drop failed samples before scoring)")
    return x, y


# --------------------------------------------------------------------------------------------- rank correlation


def spearman(x: Any, y: Any) -> float:
    """Spearman's ρ: Pearson correlation of average ranks (ties share the mean of the ranks they span).

    Returns nan when either input is constant (or has fewer than 2 elements): the correlation is undefined
    there, and nan propagates visibly instead of pretending a flat dial is "uncorrelated" (0).
    Same value as ``scipy.stats.spearmanr`` but without its ConstantInputWarning.
    """
    a, b = _paired_1d(x, y, ("x", "y"))
    if a.size < 2:
        return float("nan")
    ra, rb = rankdata(a) - (a.size + 1) / 2.0, rankdata(b) - (b.size + 1) / 2.0
    denom = np.sqrt(np.sum(ra * ra) * np.sum(rb * rb))
    if denom == 0.0:
        return float("nan")
    return float(np.clip(np.sum(ra * rb) / denom, -1.0, 1.0))


# --------------------------------------------------------------------------------------------- steerability


class SteerabilityResult(NamedTuple):
    """How well a measured attribute follows a requested dial value.

    spearman: ρ(requested, measured) pooled over all N samples (ties → average ranks); 1 = perfectly monotone.
    spread: mean measured at the highest requested value minus at the lowest, computed per group then averaged
        over groups that saw at least two distinct requested values; the dial's usable range in measured units.
    wrong_way_fraction: over consecutive requested-value steps inside each group (per-(group, value) means,
        sorted by value), the fraction whose measured mean moves against the dial direction. A step with no
        change is not a flip but stays in the denominator. nan if there are no steps.
    n: number of samples; n_steps: denominator of ``wrong_way_fraction``.
    """

    spearman: float
    spread: float
    wrong_way_fraction: float
    n: int
    n_steps: int


def steerability(
    requested: Any, measured: Any, groups: Any | None = None, *, increasing: bool = True
) -> SteerabilityResult:
    """Spearman ρ, spread and wrong-way flip rate of ``measured`` against the dial value ``requested``.

    ``groups`` (e.g. prompt ids) makes spread and flips within-prompt comparisons, so prompt difficulty does not
    masquerade as steering; without it all samples form one group, i.e. the flips are counted on the mean curve
    E[measured | requested] (the CLP grid protocol). Several samples per (group, value) are averaged first.
    ``increasing=False`` declares a dial whose attribute should fall as the requested value rises (affects only the
    flip count; ρ and spread stay signed).
    """
    req, meas = _paired_1d(requested, measured, ("requested", "measured"))
    n = int(req.size)
    if groups is None:
        grp = np.zeros(n, dtype=np.int64)
    else:
        grp = _to_numpy(groups, dtype=None).reshape(-1)
        if grp.size != n:
            raise ValueError(f"groups must have length {n}, got {grp.size}")
    rho = spearman(req, meas) if n >= 2 else float("nan")

    _, gid = np.unique(grp, return_inverse=True)
    spreads: list[float] = []
    flips = steps = 0
    sign = 1.0 if increasing else -1.0
    for g in np.unique(gid):
        mask = gid == g
        values, inv = np.unique(req[mask], return_inverse=True)  # sorted distinct requested values
        if values.size < 2:
            continue
        means = np.bincount(inv, weights=meas[mask]) / np.bincount(inv)
        spreads.append(float(means[-1] - means[0]))
        diffs = sign * np.diff(means)
        flips += int(np.sum(diffs < 0))
        steps += int(diffs.size)
    spread = float(np.mean(spreads)) if spreads else float("nan")
    wrong = flips / steps if steps else float("nan")
    return SteerabilityResult(spearman=rho, spread=spread, wrong_way_fraction=wrong, n=n, n_steps=steps)


# --------------------------------------------------------------------------------------------- Pareto / hypervolume


def pareto_front(points: Any, maximize: bool | Sequence[bool] = True) -> np.ndarray:
    """Indices (ascending) of the non-dominated rows of ``points`` [N, K].

    q is dominated when some p is at least as good in every objective and strictly better in one, so exact
    duplicates of a front point are all kept. ``maximize`` may be one bool or one per objective.
    O(N² K), fine for evaluation grids of a few hundred points.
    """
    pts = _to_numpy(points)
    if pts.ndim != 2:
        raise ValueError(f"points must be [N, K], got shape {pts.shape}")
    if pts.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    signs = np.where(np.broadcast_to(np.asarray(maximize, dtype=bool), (pts.shape[1],)), 1.0, -1.0)
    p = pts * signs
    geq = np.all(p[:, None, :] >= p[None, :, :], axis=2)  # geq[i, j]: i is at least as good as j everywhere
    gt = np.any(p[:, None, :] > p[None, :, :], axis=2)
    dominated = np.any(geq & gt, axis=0)
    return np.flatnonzero(~dominated)


def _hv_sorted(p: np.ndarray) -> float:
    """Hypervolume of points already shifted so the reference is the origin and all coordinates are > 0."""
    if p.shape[0] == 0:
        return 0.0
    k = p.shape[1]
    if k == 1:
        return float(p[:, 0].max())
    if k == 2:
        # Sweep in descending x: each point adds the strip between its y and the best y seen so far.
        order = np.argsort(-p[:, 0], kind="stable")
        vol, best_y = 0.0, 0.0
        for x, y in p[order]:
            if y > best_y:
                vol += x * (y - best_y)
                best_y = y
        return float(vol)
    # Slice along the last objective: between consecutive distinct levels, the dominated region's cross-section
    # is the (K-1)-D hypervolume of the points reaching at least that level. Exact; O(N^(K-1) log N).
    p = p[pareto_front(p)]
    levels = np.unique(p[:, -1])[::-1]
    vol = 0.0
    for i, top in enumerate(levels):
        bottom = levels[i + 1] if i + 1 < levels.size else 0.0
        vol += _hv_sorted(p[p[:, -1] >= top, :-1]) * (top - bottom)
    return float(vol)


def hypervolume(points: Any, reference: Any) -> float:
    """Volume of the region dominated by ``points`` [N, K] and bounded below by ``reference`` [K] (maximisation).

    The reference must be fixed once and shared by all methods and seeds (clp_pcm.md §1.7): HV is only comparable
    under the same reference. Points that do not strictly exceed the reference in every objective dominate
    nothing inside the box and contribute zero; dominated points add nothing either. Exact for any K (slicing,
    with a sweep at K=2); cost grows like N^(K-1), meant for K ≤ 4 and evaluation-grid-sized N.
    """
    pts = _to_numpy(points)
    ref = _to_numpy(reference).reshape(-1)
    if pts.ndim != 2 or pts.shape[1] != ref.size:
        raise ValueError(f"points must be [N, {ref.size}] to match reference, got shape {pts.shape}")
    if not (np.all(np.isfinite(pts)) and np.all(np.isfinite(ref))):
        raise ValueError("points and reference must be finite")
    shifted = pts - ref
    shifted = shifted[np.all(shifted > 0, axis=1)]
    return _hv_sorted(shifted)


# --------------------------------------------------------------------------------------------- win rates


def win_rate(scores_a: Any, scores_b: Any, ties: float = 0.5) -> float:
    """Fraction of paired items where A scores higher than B; exact ties count ``ties`` (0.5 = half a win)."""
    a, b = _paired_1d(scores_a, scores_b, ("scores_a", "scores_b"))
    if a.size == 0:
        return float("nan")
    return float(np.mean((a > b) + ties * (a == b)))


def reward_accuracy(chosen_scores: Any, rejected_scores: Any) -> float:
    """Preference accuracy of a reward model: fraction of pairs with r(chosen) > r(rejected), ties count 0.5.

    Ties count half so a constant RM scores 0.5 (chance), not 0 or 1.
    """
    return win_rate(chosen_scores, rejected_scores, ties=0.5)


def paired_bootstrap_ci(
    scores_a: Any,
    scores_b: Any,
    stat: Callable[[np.ndarray, np.ndarray], float] = win_rate,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(estimate, low, high): ``stat`` on the full data and its percentile bootstrap (1-alpha) interval.

    Items (prompts) are resampled with replacement, keeping A and B of the same item together, because both
    arms answer the same prompts and the prompt-level correlation must not be thrown away.
    """
    a, b = _paired_1d(scores_a, scores_b, ("scores_a", "scores_b"))
    if a.size == 0:
        raise ValueError("need at least one paired item")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    boots = np.array([stat(a[i], b[i]) for i in idx], dtype=float)
    low, high = np.quantile(boots, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(stat(a, b)), float(low), float(high)


class BothOrdersResult(NamedTuple):
    """win_rate: mean over items of the two orders' P(A wins); consistency: fraction of items whose verdict
    (A / B / tie, thresholded at 0.5) is the same in both presentation orders."""

    win_rate: float
    consistency: float


def both_orders_win_rate(judge_ab: Any, judge_ba: Any) -> BothOrdersResult:
    """Position-debiased win rate from a pairwise judge run with both presentation orders.

    ``judge_ab[i]`` / ``judge_ba[i]`` = P(A better) on item i when A / B was shown first, both already expressed
    as "A wins" (hard verdicts are 1, 0.5, 0). Averaging the two orders cancels a judge's first-position bias;
    low consistency says the judge's verdicts are mostly position, not content (PCM reviewers' concern).
    For a CI use ``paired_bootstrap_ci(ab, ba, stat=lambda x, y: both_orders_win_rate(x, y).win_rate)``.
    """
    ab, ba = _paired_1d(judge_ab, judge_ba, ("judge_ab", "judge_ba"))
    if np.any((ab < 0) | (ab > 1) | (ba < 0) | (ba > 1)):
        raise ValueError("judge probabilities must lie in [0, 1]")
    if ab.size == 0:
        return BothOrdersResult(float("nan"), float("nan"))
    rate = float(np.mean((ab + ba) / 2.0))
    consistency = float(np.mean(np.sign(ab - 0.5) == np.sign(ba - 0.5)))
    return BothOrdersResult(win_rate=rate, consistency=consistency)
