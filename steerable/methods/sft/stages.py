"""SFT's stages: train (loss on assistant tokens only, LoRA by default) -> eval (samples before/after). The recipe
itself is `methods/sft_recipe.py`, which other methods reuse with other data."""

from __future__ import annotations

from steerable.methods.base import RunContext
from steerable.methods.sft_recipe import before_and_after, close_report, report_prompts, setup_rows, train_sft
from steerable.pipeline import StageResults, StageSummary
from steerable.report import Report

__all__ = ["eval_stage", "train_stage"]


def train_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    return train_sft(ctx)


def eval_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    cfg = ctx.cfg
    prompts, before, after = before_and_after(ctx, report_prompts)
    train = done.require("train")
    report = Report(f"{cfg.task_name}: {cfg.method.name} on {cfg.model.name} / {cfg.data.name}")
    report.section("Setup").key_values(setup_rows(ctx, train, cfg.method.name))
    report.section("Training").key_values(
        {
            "optimizer steps": train.get("steps"),
            "train examples": train.get("train_examples"),
            "held-out examples": train.get("val_examples"),
            "held-out loss before": train.get("val_loss_before"),
            "held-out loss after": train.get("val_loss"),
            "last train loss": train.get("train_loss"),
            "truncated / dropped (length policy)": f"{train.get('truncated')} / {train.get('dropped')}",
            "training time (s)": train.get("fit_seconds"),
        }
    )
    return close_report(
        ctx, report, prompts, before, after, "the starting model (for LoRA: the adapter switched off)"
    )
