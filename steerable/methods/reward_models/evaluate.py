"""`steerable-eval eval=reward_accuracy`: how well a finished reward or attribute model scores held-out data
(pairwise accuracy with a bootstrap interval, or per-attribute error and correlation against the training mean)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from steerable.config.schema import EvalConfig
from steerable.evaluation.metrics import paired_bootstrap_ci, reward_accuracy
from steerable.evaluation.plots import plot_series
from steerable.evaluation.runner import eval_records
from steerable.methods.reward_models.stages import attribute_metrics, attribute_table, pair_scores
from steerable.pipeline import StageResults
from steerable.report import Report
from steerable.rewards.scoring_model import ScorerMeta, load_scorer


def training_means(run_dir: Path, meta: ScorerMeta) -> list[float | None]:
    """Each attribute's mean label in the run's training split (the baseline predictor), when recorded."""
    train = StageResults.finished(run_dir, ["train"]).get("train", {})
    return train.get("train_means") or [None] * len(meta.names)


def eval_reward_accuracy(cfg: EvalConfig, out_dir: Path, report: Report) -> dict[str, Any]:
    model, tokenizer, meta = load_scorer(cfg.run)
    records = eval_records(cfg)
    if meta.kind == "attribute_model":
        rows = attribute_metrics(
            model, tokenizer, meta, records, training_means(Path(cfg.run), meta), cfg.eval.batch_size
        )
        report.section(
            "Attribute prediction",
            f"{sum(r['n'] for r in rows)} labels on {cfg.data.name} "
            f"({cfg.eval.split}); baseline = the training mean of each attribute.",
        )
        attribute_table(report, rows)
        return {"attributes": rows}
    chosen, rejected = pair_scores(model, tokenizer, records, meta.max_length, cfg.eval.batch_size)
    estimate, low, high = paired_bootstrap_ci(
        chosen.numpy(), rejected.numpy(), stat=reward_accuracy, n_boot=cfg.eval.bootstrap, seed=cfg.seed
    )
    margins = (chosen - rejected).numpy()
    result = {
        "accuracy": estimate,
        "ci_low": low,
        "ci_high": high,
        "pairs": len(margins),
        "mean_margin": float(margins.mean()),
    }
    report.section(
        "Pairwise accuracy",
        f"{len(margins)} pairs from {cfg.data.name} ({cfg.eval.split}); "
        "95% paired bootstrap interval; chance is 0.5.",
    ).key_values(result)
    plot = plot_series(
        np.arange(len(margins)),
        {"r(chosen) - r(rejected)": np.sort(margins)},
        out_dir / "margins.png",
        xlabel="pair (sorted)",
        ylabel="score margin (reward-model units)",
        title="Reward margins on held-out pairs",
    )
    report.image(plot, out_dir, "sorted margins")
    return result
