"""The eval stage of a run that is an arm of a benchmark suite (`benchmark=<suite>`): the leaderboard's
evaluator on this one run, the same function `steerable-eval eval=leaderboard` runs over a whole multirun, so
an arm's own row (and, with logger=wandb, its W&B run in the sweep's group) matches the leaderboard's."""

from __future__ import annotations

from steerable.config.schema import EvalConfig, EvalSettings
from steerable.evaluation.leaderboard import eval_leaderboard
from steerable.evaluation.runner import finish
from steerable.methods.base import RunContext
from steerable.methods.registry import load_policy
from steerable.pipeline import StageResults, StageSummary
from steerable.report import Report

OUT_DIR = "leaderboard"


def in_suite(ctx: RunContext) -> bool:
    return ctx.cfg.benchmark is not None


def eval_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    """<run>/leaderboard/: this run's row of its suite's leaderboard (report, plots, results.json)."""
    cfg = ctx.cfg
    evaluation = EvalConfig(
        run=str(ctx.run_dir),
        eval=EvalSettings(name="leaderboard"),
        data=cfg.data,
        hardware=cfg.hardware,
        logger=cfg.logger,
        benchmark=cfg.benchmark,
        generation=cfg.generation,
        seed=cfg.seed,
    )
    out = ctx.run_dir / OUT_DIR
    out.mkdir(parents=True, exist_ok=True)
    suite = cfg.benchmark
    report = Report(f"{cfg.task_name}: arm {suite.arm or cfg.method.name} of benchmark {suite.name}")
    result = finish(eval_leaderboard(evaluation, out, report, load_policy), report, out)
    headline = {
        f"{row['name']}/{key}": value["value"]
        for row in result["rows"]
        for key, value in row["metrics"].items()
        if value is not None
    }
    return {"report": str(out / "report.md"), "leaderboard": str(out / "leaderboard.md"), **headline}
