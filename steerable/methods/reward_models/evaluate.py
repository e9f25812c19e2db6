"""How well a finished reward or attribute model scores held-out data: pairwise accuracy, or per-attribute error
and correlation against the training mean. The eval stage reports them; `steerable-eval eval=reward_accuracy`
adds a bootstrap interval."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from steerable.config.schema import EvalConfig
from steerable.data.records import Conversation, PreferencePair
from steerable.data.tokenize import pad_rows
from steerable.evaluation.metrics import paired_bootstrap_ci, reward_accuracy, spearman
from steerable.evaluation.plots import plot_series
from steerable.evaluation.runner import eval_records
from steerable.methods.reward_models.data import (
    MISSING_LABEL,
    label_examples,
    labelled_replies,
    pair_examples,
)
from steerable.pipeline import StageResults
from steerable.report import Report
from steerable.rewards.scoring_model import ScorerMeta, ScoringModel, load_scorer


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


@torch.no_grad()
def score_ids(model: ScoringModel, sequences: list[list[int]], pad_id: int, batch_size: int) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(sequences), batch_size):
        ids, mask = pad_rows(sequences[start : start + batch_size], pad_id)
        out.append(model(ids.to(device), mask.to(device)).float().cpu())
    return torch.cat(out) if out else torch.empty(0, model.head.out_features)


def pair_scores(
    model: ScoringModel, tokenizer, pairs: list[PreferencePair], max_length: int, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of the chosen and of the rejected reply of each pair ([N], [N])."""
    examples = pair_examples(pairs, tokenizer, max_length)
    chosen = score_ids(model, [e["chosen"] for e in examples], tokenizer.pad_token_id, batch_size)[:, 0]
    rejected = score_ids(model, [e["rejected"] for e in examples], tokenizer.pad_token_id, batch_size)[:, 0]
    return chosen, rejected


def pair_accuracy(
    model: ScoringModel, tokenizer, pairs: list[PreferencePair], max_length: int, batch_size: int
) -> dict[str, float]:
    chosen, rejected = pair_scores(model, tokenizer, pairs, max_length, batch_size)
    return {
        "accuracy": reward_accuracy(chosen.numpy(), rejected.numpy()),
        "pairs": len(chosen),
        "mean_margin": float((chosen - rejected).mean()),
        "ties": int((chosen == rejected).sum()),
    }


def attribute_table(report: Report, rows: list[dict[str, Any]]) -> None:
    report.table(
        ["attribute", "n", "MSE", "baseline MSE", "Pearson", "Spearman"],
        [[r["attribute"], r["n"], r["mse"], r["baseline_mse"], r["pearson"], r["spearman"]] for r in rows],
    )


def attribute_metrics(
    model: ScoringModel,
    tokenizer,
    meta: ScorerMeta,
    conversations: list[Conversation],
    baseline_means: list[float | None],
    batch_size: int,
) -> list[dict[str, Any]]:
    """Per attribute on held-out replies: MSE, Pearson, Spearman, next to predicting the training mean."""
    examples = label_examples(labelled_replies(conversations, meta.names), tokenizer, meta.max_length)
    predictions = score_ids(model, [e["ids"] for e in examples], tokenizer.pad_token_id, batch_size).numpy()
    labels = np.array([e["labels"] for e in examples], dtype=float).reshape(-1, len(meta.names))
    rows = []
    for j, name in enumerate(meta.names):
        keep = labels[:, j] != MISSING_LABEL
        y, p = labels[keep, j], predictions[keep, j]
        if y.size < 2:
            continue
        mean = baseline_means[j] if baseline_means[j] is not None else float(np.mean(y))
        rows.append(
            {
                "attribute": name,
                "n": int(y.size),
                "mse": float(np.mean((p - y) ** 2)),
                "baseline_mse": float(np.mean((mean - y) ** 2)),
                "pearson": float(np.corrcoef(p, y)[0, 1])
                if np.std(p) > 0 and np.std(y) > 0
                else float("nan"),
                "spearman": spearman(p, y),
            }
        )
    return rows
