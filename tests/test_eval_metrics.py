"""Hand-checked tests for steerable.evaluation: metrics, METEOR and plots (fast, offline)."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import spearmanr

from steerable.evaluation import meteor as meteor_mod
from steerable.evaluation.meteor import mean_pairwise_meteor, meteor, wordnet_available
from steerable.evaluation.metrics import (
    both_orders_win_rate,
    hypervolume,
    paired_bootstrap_ci,
    pareto_front,
    reward_accuracy,
    spearman,
    steerability,
    win_rate,
)
from steerable.evaluation.plots import plot_dial_curves, plot_pareto, plot_series

# ----------------------------------------------------------------------------------------------- spearman


def test_spearman_hand_example_with_ties() -> None:
    # x = [1, 2, 2, 3] → average ranks [1, 2.5, 2.5, 4]; y = [1, 3, 2, 4] → ranks [1, 3, 2, 4]; both means 2.5.
    # centred: dx = [-1.5, 0, 0, 1.5], dy = [-1.5, 0.5, -0.5, 1.5]
    # Σdx·dy = 2.25 + 2.25 = 4.5; Σdx² = 4.5; Σdy² = 5 → ρ = 4.5 / sqrt(22.5) = 3 / sqrt(10) ≈ 0.9487
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10))


def test_spearman_matches_scipy_and_constant_is_nan() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 5, 40), rng.integers(0, 5, 40)  # many ties
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert spearman([3, 1, 2], [30, 10, 20]) == pytest.approx(1.0)
    assert spearman([3, 1, 2], [-30, -10, -20]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError):
        spearman([1, 2], [1, 2, 3])


# ----------------------------------------------------------------------------------------------- steerability


def test_steerability_hand_example() -> None:
    # prompt a: dial 0,1,2 → 1, 2, 3   (spread +2, steps +1 +1: no flip)
    # prompt b: dial 0,1,2 → 2, 1, 1   (spread −1, steps −1 (flip) and 0 (tie: not a flip, still a step))
    requested = [0, 1, 2, 0, 1, 2]
    measured = [1.0, 2.0, 3.0, 2.0, 1.0, 1.0]
    groups = ["a", "a", "a", "b", "b", "b"]
    res = steerability(requested, measured, groups)
    assert res.spread == pytest.approx((2 + -1) / 2)
    assert res.wrong_way_fraction == pytest.approx(1 / 4)
    assert (res.n, res.n_steps) == (6, 4)
    # pooled ρ: ranks(req) = [1.5, 3.5, 5.5]*2, ranks(meas) = [2, 4.5, 6, 4.5, 2, 2], both means 3.5
    # Σd_r·d_m = 3 + 0 + 5 − 2 + 0 − 3 = 3; Σd_r² = 16; Σd_m² = 15 → ρ = 3 / sqrt(240)
    assert res.spearman == pytest.approx(3 / math.sqrt(240))

    # Without groups, the mean curve is 1.5, 1.5, 2.0: spread 0.5, steps = tie and rise → no flips.
    pooled = steerability(requested, measured)
    assert pooled.spread == pytest.approx(0.5)
    assert pooled.wrong_way_fraction == 0.0
    assert pooled.n_steps == 2

    # A dial meant to lower the attribute: prompt a's two rises become flips, prompt b's fall does not.
    down = steerability(requested, measured, groups, increasing=False)
    assert down.wrong_way_fraction == pytest.approx(2 / 4)


def test_steerability_single_value_has_no_steps() -> None:
    res = steerability([1, 1, 1], [0.1, 0.5, 0.3], [0, 1, 2])
    assert math.isnan(res.spread) and math.isnan(res.wrong_way_fraction) and math.isnan(res.spearman)
    assert res.n_steps == 0


# ----------------------------------------------------------------------------------------------- Pareto / HV


def test_pareto_front_hand_case() -> None:
    pts = np.array([[1, 3], [2, 2], [3, 1], [1, 1], [2, 2], [0, 3]], dtype=float)
    # (1,1) is dominated by (2,2); (0,3) by (1,3); the duplicate (2,2) is not strictly dominated → kept.
    assert pareto_front(pts).tolist() == [0, 1, 2, 4]
    # Minimising both: (1,1) beats every point except (0,3), which is better on the first objective.
    assert pareto_front(pts, maximize=False).tolist() == [3, 5]
    # Max x, min y: (3,1) has the largest x and the smallest y, so it dominates everything else.
    assert pareto_front(pts, maximize=[True, False]).tolist() == [2]


def test_hypervolume_2d_hand_values() -> None:
    # Staircase (1,3),(2,2),(3,1) over ref (0,0): 3·1 + 2·(2−1) + 1·(3−2) = 6
    front = np.array([[1, 3], [2, 2], [3, 1]], dtype=float)
    assert hypervolume(front, [0, 0]) == pytest.approx(6.0)
    # dominated (1,1), below-reference (4,−1) and on-the-boundary (5,0) points add nothing
    extra = np.vstack([front, [[1, 1], [4, -1], [5, 0]]])
    assert hypervolume(extra, [0, 0]) == pytest.approx(6.0)
    # ref (1,1): shifted points (0,2),(1,1),(2,0); only (1,1) strictly dominates the reference → area 1
    assert hypervolume(front, [1, 1]) == pytest.approx(1.0)
    assert hypervolume(np.zeros((0, 2)), [0, 0]) == 0.0


def test_hypervolume_3d_hand_value() -> None:
    # Boxes [0,2]×[0,1]×[0,1], [0,1]×[0,2]×[0,1], [0,1]×[0,1]×[0,2], each volume 2.
    # Inclusion–exclusion: every pairwise and the triple intersection is the unit cube [0,1]³:
    # |A∪B∪C| = 3·2 − 3·1 + 1 = 4
    pts = np.array([[2, 1, 1], [1, 2, 1], [1, 1, 2]], dtype=float)
    assert hypervolume(pts, [0, 0, 0]) == pytest.approx(4.0)
    # a dominated point and one below the reference in z change nothing
    assert hypervolume(np.vstack([pts, [[1, 1, 1], [9, 9, -0.5]]]), [0, 0, 0]) == pytest.approx(4.0)
    # (3,1,1) ∪ (1,2,2): 3 + 4 − 1 = 6
    assert hypervolume([[3, 1, 1], [1, 2, 2]], [0, 0, 0]) == pytest.approx(6.0)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_hypervolume_matches_unit_cell_count(k: int) -> None:
    # Independent oracle for integer points: count unit cells [c, c+1]^k dominated by some point.
    rng = np.random.default_rng(k)
    pts = rng.integers(0, 5, size=(7, k)).astype(float)
    cells = np.array(list(itertools.product(range(4), repeat=k)), dtype=float) + 1.0  # upper corners
    covered = np.any(np.all(pts[None, :, :] >= cells[:, None, :], axis=2), axis=1)
    assert hypervolume(pts, np.zeros(k)) == pytest.approx(float(covered.sum()))


# ----------------------------------------------------------------------------------------------- win rates


def test_win_rate_and_reward_accuracy() -> None:
    a, b = [3, 2, 1, 5], [1, 2, 4, 0]  # win, tie, loss, win
    assert win_rate(a, b) == pytest.approx(2.5 / 4)
    assert win_rate(a, b, ties=0.0) == pytest.approx(2 / 4)
    assert reward_accuracy([1, 2, 3, 4], [0, 2, 4, 1]) == pytest.approx(2.5 / 4)
    assert reward_accuracy([1, 1], [1, 1]) == pytest.approx(0.5)  # a constant RM is at chance


def test_paired_bootstrap_ci_contains_estimate_and_narrows() -> None:
    rng = np.random.default_rng(0)

    def ci_width(n: int) -> tuple[float, float, float, float]:
        a = rng.normal(0.2, 1.0, n)
        b = rng.normal(0.0, 1.0, n)
        est, lo, hi = paired_bootstrap_ci(a, b, n_boot=500, seed=3)
        assert est == pytest.approx(win_rate(a, b))
        return est, lo, hi, hi - lo

    est, lo, hi, w_small = ci_width(40)
    assert lo <= est <= hi and lo < hi
    est, lo, hi, w_large = ci_width(2000)
    assert lo <= est <= hi
    assert w_large < w_small / 3  # ~ 1/sqrt(n): sqrt(50) ≈ 7× narrower
    a, b = rng.normal(size=30), rng.normal(size=30)
    assert paired_bootstrap_ci(a, b, seed=5) == paired_bootstrap_ci(a, b, seed=5)


def test_both_orders_win_rate() -> None:
    ab = [1.0, 1.0, 0.5, 0.0]  # P(A wins) with A shown first
    ba = [1.0, 0.0, 0.5, 0.2]  # P(A wins) with B shown first
    res = both_orders_win_rate(ab, ba)
    assert res.win_rate == pytest.approx((1 + 0.5 + 0.5 + 0.1) / 4)
    # item 1 flips with position (A, then B); item 2 is a tie both times; items 0 and 3 agree → 3/4
    assert res.consistency == pytest.approx(0.75)
    with pytest.raises(ValueError):
        both_orders_win_rate([1.2], [0.0])


# ----------------------------------------------------------------------------------------------- METEOR


def test_meteor_hand_worked_example() -> None:
    # hyp: the fast brown foxes jumped high (6 words); ref: the quick brown fox jumps (5 words)
    # exact:  the→the (0,0), brown→brown (2,2)
    # stem:   foxes/fox → "fox" (3,3), jumped/jumps → "jump" (4,4); fast, high, quick unmatched (no WordNet)
    # m = 4, P = 4/6, R = 4/5, Fmean = P·R / (0.9·P + 0.1·R) = (8/15) / 0.68 = 40/51
    # chunks: (0,0) | (2,2)(3,3)(4,4) → 2; penalty = 0.5·(2/4)³ = 1/16
    # score = (1 − 1/16)·40/51 = 25/34 ≈ 0.7353
    score = meteor("the fast brown foxes jumped high", "the quick brown fox jumps", use_wordnet=False)
    assert score == pytest.approx(25 / 34)


def test_meteor_identical_scrambled_and_disjoint() -> None:
    sent = "the cat sat on the mat"
    # identical: 6 matches in 1 chunk → 1 − 0.5·(1/6)³
    assert meteor(sent, sent, use_wordnet=False) == pytest.approx(1 - 0.5 / 6**3)
    scrambled = meteor("mat the on sat cat the", sent, use_wordnet=False)
    assert scrambled < 0.9  # every match its own chunk → penalty 0.5
    assert scrambled == pytest.approx(0.5)
    assert meteor("completely different words", sent, use_wordnet=False) == 0.0
    assert meteor("", sent) == 0.0


def test_meteor_stem_matching() -> None:
    # running→run, dogs→dog: 2 matches, 1 chunk, P = R = 1 → 1 − 0.5·(1/2)³ = 0.9375; exact-only would be 0.
    assert meteor("running dogs", "run dog", use_wordnet=False) == pytest.approx(0.9375)
    assert meteor(["Running", "Dogs"], ["run", "dog"], use_wordnet=False) == pytest.approx(0.9375)


def test_meteor_wordnet_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(wordnet_available(), bool)  # detection never raises or downloads
    monkeypatch.setattr(meteor_mod, "_load_wordnet", lambda: None)
    assert meteor("running dogs", "run dog") == pytest.approx(0.9375)  # auto mode degrades to exact+stem
    with pytest.raises(RuntimeError):
        meteor("running dogs", "run dog", use_wordnet=True)


def test_meteor_synonym_stage_is_wired(monkeypatch: pytest.MonkeyPatch) -> None:
    lemma = SimpleNamespace(name=lambda: "quick")
    fake_wn = SimpleNamespace(
        synsets=lambda w: [SimpleNamespace(lemmas=lambda: [lemma])] if w == "fast" else []
    )
    monkeypatch.setattr(meteor_mod, "_load_wordnet", lambda: fake_wn)
    # Hand example plus fast~quick: m = 5, P = 5/6, R = 1 → Fmean = (5/6)/0.85; one chunk → penalty 0.5·(1/5)³
    expected = (5 / 6) / 0.85 * (1 - 0.5 / 125)
    hyp, ref = "the fast brown foxes jumped high", "the quick brown fox jumps"
    assert meteor(hyp, ref) == pytest.approx(expected)
    assert meteor(hyp, ref, use_wordnet=False) == pytest.approx(25 / 34)


def test_mean_pairwise_meteor() -> None:
    texts = ["a b c", "a b d", "x y z"]
    # (0,1) and (1,0): m = 2, P = R = 2/3, one chunk → (2/3)·(1 − 0.5·(1/2)³) = 0.625; other 4 pairs score 0
    assert mean_pairwise_meteor(texts, use_wordnet=False) == pytest.approx(2 * 0.625 / 6)
    collapsed = ["the answer is yes"] * 4
    assert mean_pairwise_meteor(collapsed) > 0.99 > mean_pairwise_meteor(texts)
    assert mean_pairwise_meteor(texts, max_pairs=100) == mean_pairwise_meteor(texts)  # ≥ all pairs → all
    sampled = mean_pairwise_meteor(texts, max_pairs=2, seed=1)
    assert sampled in {0.0, 0.625 / 2, 0.625}
    assert sampled == mean_pairwise_meteor(texts, max_pairs=2, seed=1)
    assert math.isnan(mean_pairwise_meteor(["only one"]))


# ----------------------------------------------------------------------------------------------- plots


def _assert_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []  # temp file renamed away


def test_plots_write_png(tmp_path) -> None:
    x = np.linspace(0, 1, 5)
    out = plot_dial_curves(
        {"clp": (x, x**2, np.full(5, 0.05)), "rs": (x, x, None)}, tmp_path / "sub" / "dial.png", "dial"
    )
    _assert_png(out)
    arms = {"clp": np.random.default_rng(0).random((11, 2)), "rs": np.array([[0.1, 0.9], [0.9, 0.1]])}
    _assert_png(plot_pareto(arms, tmp_path / "pareto.png", labels=("r1", "r2"), reference=(0.0, 0.0)))
    _assert_png(
        plot_series(
            np.arange(4),
            {"kl": [0, 1, 2, 3], "meteor": [0.1, 0.1, 0.2, 0.3]},
            tmp_path / "series.png",
            "step",
            "value",
            "train",
        )
    )
    with pytest.raises(ValueError):
        plot_series(np.arange(4), {"bad": [1, 2]}, tmp_path / "bad.png", "step", "value", "t")
    assert not (tmp_path / "bad.png").exists()
