"""Training diagnostics of the online loops: what they measure on a hand-checkable step, and that a tiny CLP run
logs them and writes its diagnostics report."""

from __future__ import annotations

import csv
import math

import torch

from steerable.training.diagnostics import (
    StepRows,
    mixture_diagnostics,
    policy_gradient_diagnostics,
    within_prompt,
)
from tests.test_reward_direction import PROMPTS, Corners, clp_module


def test_each_weighting_s_advantage_follows_its_own_objective_without_kl() -> None:
    """Corner weightings, kl_coef 0: the advantage of the w_lower rows is exactly lowercase's within-prompt
    deviation (correlation 1), and likewise for uppercase; the adapter copies are identical until the update."""
    module, conditioning = clp_module("attn", Corners())
    _, metrics = module.rl_loss(PROMPTS)
    for name in ("lower", "upper"):
        assert abs(metrics[f"diag/w_{name}/advantage_corr_{name}"] - 1) < 1e-5
        assert metrics[f"diag/w_{name}/weight"] == 1.0
    assert metrics["diag/copy_spread"] == 0.0
    assert 0 <= metrics["diag/truncated_fraction"] <= 1
    loss, _ = module.rl_loss(PROMPTS)
    loss.backward()
    torch.optim.Adam([p for p in module.model.parameters() if p.requires_grad], lr=1e-2).step()
    assert conditioning.signal()["diag/copy_spread"] > 0.1


def test_diagnostics_by_hand() -> None:
    names = ["a", "b"]
    weights = torch.tensor([[0.9, 0.1]] * 2 + [[0.2, 0.8]] * 2)
    scores = torch.tensor([[1.0, 0.0], [3.0, 1.0], [0.0, 2.0], [0.0, 0.0]])
    scalar = (weights * scores).sum(1)
    log_ratio = torch.tensor([0.5, 0.1, 0.0, 0.2])
    advantages = torch.tensor([-1.0, 1.0, 1.0, -1.0])
    out = policy_gradient_diagnostics(names, StepRows(weights, scores, scalar, log_ratio, advantages), 2, 0.1)
    assert out["diag/w_a/reward_a"] == 2.0 and out["diag/w_b/reward_b"] == 1.0
    assert abs(out["diag/w_a/kl"] - 0.3) < 1e-6 and abs(out["diag/w_b/weight"] - 0.8) < 1e-6
    assert (
        abs(out["diag/w_a/advantage_corr_a"] - 1) < 1e-6 and abs(out["diag/w_b/advantage_corr_b"] - 1) < 1e-6
    )
    assert torch.equal(
        within_prompt(torch.tensor([1.0, 3.0, 2.0, 2.0]), 2), torch.tensor([-1.0, 1.0, 0.0, 0.0])
    )
    # the KL penalty's within-prompt spread: deviations ±0.02 and ±0.01
    assert abs(out["diag/kl_penalty_spread"] - torch.tensor([0.02, -0.02, -0.01, 0.01]).std()) < 1e-6


def test_a_weighting_group_absent_from_a_step_logs_nan_not_nothing() -> None:
    """Lightning re-logs a key's value from an earlier step when a step does not log it (the first tiny-scale
    clp_demo run showed identical w_verbosity numbers in consecutive steps); an absent group must read NaN."""
    weights = torch.tensor([[0.9, 0.1]] * 4)
    scores = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    out = policy_gradient_diagnostics(
        ["a", "b"], StepRows(weights, scores, scores[:, 0], torch.zeros(4), torch.randn(4)), 2, 0.1
    )
    absent = [k for k in out if k.startswith("diag/w_b/")]
    assert len(absent) == 6 and all(math.isnan(out[k]) for k in absent)
    alpha = torch.zeros(2, 3, 2)  # log weights: both experts at weight 1 (values do not matter here)
    pcm = mixture_diagnostics(
        ["x", "y"], torch.tensor([[True, False]] * 2), alpha, torch.ones(2, 3), [{"x": 0.7}] * 2
    )
    assert pcm["diag/alpha_x"] == 1.0 and pcm["diag/reward_x"] == 0.7
    assert math.isnan(pcm["diag/alpha_y"]) and math.isnan(pcm["diag/reward_y"])


def test_tiny_clp_run_logs_the_diagnostics_and_plots_them(clp_run) -> None:
    header = next(csv.reader((clp_run / "metrics.csv").open()))
    for key in (
        "diag/advantage_std",
        "diag/kl_penalty_spread",
        "diag/spread_verbosity",
        "diag/truncated_fraction",
        "diag/copy_spread",
    ):
        assert key in header, key
    groups = [k for k in header if k.startswith("diag/w_")]
    assert {k.split("/")[1] for k in groups} <= {"w_verbosity", "w_positivity"} and groups
    assert any(k.endswith("/advantage_corr_positivity") for k in groups)
    report = (clp_run / "diagnostics.md").read_text()
    assert "## Training diagnostics" in report and "diagnostics/advantage.png" in report
    assert (clp_run / "diagnostics" / "advantage.png").is_file()
