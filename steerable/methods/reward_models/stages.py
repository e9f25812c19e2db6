"""The stages of the reward model (Bradley–Terry) and the attribute model (multi-attribute regression): train -> eval.

Both train a ScoringModel (backbone + linear head) with the shared Lightning recipe; they differ in data
(pairs vs labelled replies), loss and held-out metrics.
"""

from __future__ import annotations

from steerable.data.loaders import load_records, split_records
from steerable.methods.base import RunContext
from steerable.methods.reward_models.evaluate import attribute_metrics, attribute_table, pair_accuracy
from steerable.methods.reward_models.train import train_attribute_model, train_reward_model
from steerable.pipeline import StageResults, StageSummary
from steerable.report import Report
from steerable.rewards.scoring_model import load_scorer


def eval_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    cfg = ctx.cfg
    model, tokenizer, meta = load_scorer(ctx.run_dir)
    _, val_records = split_records(load_records(cfg.data), cfg.data)
    report = Report(f"{cfg.task_name}: {meta.kind} on {cfg.model.name} / {cfg.data.name}")
    train = done.require("train")
    report.section("Setup").key_values(
        {
            "run folder": ctx.run_dir,
            "model": cfg.model.name,
            "data": cfg.data.name,
            "data half": cfg.data.half or "all",
            "optimizer steps": train.get("steps"),
            "trainable / frozen params": f"{train.get('trainable_params')} / {train.get('frozen_params')}",
            "outputs": ", ".join(meta.names),
            "pooling": meta.pooling,
        }
    )
    if meta.kind == "reward_model":
        result = pair_accuracy(model, tokenizer, val_records, meta.max_length, cfg.method.eval_batch_size)
        report.section("Held-out pairwise accuracy", "Chance is 0.5; ties count half.").key_values(result)
    else:
        rows = attribute_metrics(
            model,
            tokenizer,
            meta,
            val_records,
            train.get("train_means", [None] * len(meta.names)),
            cfg.method.eval_batch_size,
        )
        report.section(
            "Held-out attribute prediction",
            "Baseline: predict the training mean of each attribute (its correlation is undefined).",
        )
        attribute_table(report, rows)
        result = {"attributes": rows}
    return {**result, "report": str(report.write(ctx.run_dir / "report.md"))}


def train_reward_model_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    return train_reward_model(ctx)


def train_attribute_model_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    return train_attribute_model(ctx)
