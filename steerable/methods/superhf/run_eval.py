"""SuperHF (Mukobi et al. 2023): iterated best-of-n with reward filtering, supervised loss and a KL prior."""

from __future__ import annotations

from steerable.generation import Engine
from steerable.methods.base import RunContext
from steerable.methods.benchmark import eval_stage as benchmark_eval_stage
from steerable.methods.benchmark import in_suite
from steerable.methods.superhf.evaluate import run_evaluation
from steerable.pipeline import StageResults, StageSummary
from steerable.report import Report


def eval_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    """The run's report: setup, training summary, then the held-out comparison (superhf/ holds the files)."""
    if in_suite(ctx):  # an arm of a benchmark suite: the leaderboard's evaluator, on this run
        return benchmark_eval_stage(ctx, done)
    cfg, m = ctx.cfg, ctx.cfg.method
    train = done.require("train")
    model, tokenizer = ctx.trained_model()
    report = Report(f"{cfg.task_name}: SuperHF on {cfg.model.name} / {cfg.data.name}")
    report.section("Setup").key_values(
        {
            "run folder": ctx.run_dir,
            "train reward": m.reward,
            "gold reward": m.gold_reward,
            "prompts x completions per superbatch": f"{m.prompt_accumulation} x {m.completions_per_prompt}",
            "kept per prompt": m.top_k,
            "kl_coef / direction / aggregation": f"{m.kl_coef} / {m.kl_direction} / {m.kl_aggregation}",
            "superbatches": train.get("superbatches"),
            "optimizer steps": train.get("steps"),
            "training time (s)": train.get("fit_seconds"),
            "skipped invalid losses": train.get("skipped_losses"),
            "hardware": f"{cfg.hardware.name} ({cfg.hardware.precision.value})",
        }
    )
    out_dir = ctx.run_dir / "superhf"
    result = run_evaluation(
        model,
        tokenizer,
        m,
        cfg.data,
        cfg.reward,
        run_dir=ctx.run_dir,
        out_dir=out_dir,
        report=report,
        num_prompts=m.eval_prompts,
        seed=cfg.seed,
        device=ctx.device.type,
        engine=Engine(cfg.model.end_of_turn, cfg.generation),
        autocast=ctx.autocast,
    )
    report.write(ctx.run_dir / "report.md")
    return {"results": str(out_dir / "results.json"), "arms": result["arms"]}
