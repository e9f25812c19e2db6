"""CLP (Conditioned Language Policy) and its Rewarded Soups baseline: multi-objective RL over reward weightings."""

from __future__ import annotations

from pathlib import Path

from steerable.backbone.loading import load_tokenizer
from steerable.config.schema import DataConfig
from steerable.methods.base import RunContext, run_config, run_model_config
from steerable.methods.benchmark import eval_stage as benchmark_eval_stage
from steerable.methods.benchmark import in_suite
from steerable.methods.clp.config import CLPConfig, RewardedSoupsConfig
from steerable.methods.clp.evaluate import evaluate_runs
from steerable.methods.clp.stages import (
    load_rewards,
    prompt_split,
    read_calibration,
)
from steerable.pipeline import StageResults, StageSummary
from steerable.policies.runs import run_kind, run_rewards
from steerable.report import Report


def eval_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    """This run and `method.eval.compare` runs on one weight grid: report.md, pareto/ with the plot and numbers."""
    if in_suite(ctx):  # an arm of a benchmark suite: the leaderboard's evaluator, on this run
        return benchmark_eval_stage(ctx, done)
    cfg, m = ctx.cfg, ctx.cfg.method
    train, calibration = done.require("train"), done.require("calibrate")
    report = Report(f"{cfg.task_name}: {m.name} on {cfg.model.name} / {cfg.data.name}")
    report.section("Setup").key_values(
        {
            "run folder": ctx.run_dir,
            "objectives": ", ".join(calibration["objectives"]),
            "variant": getattr(m, "variant", "rewarded soups (one run per objective)"),
            "RL": f"REINFORCE + leave-one-out over k={m.samples_per_prompt}, KL coef {m.kl_coef} in the {m.kl_in}",
            "budget": f"{cfg.trainer.max_steps} steps x {m.batch_size} prompts x {m.samples_per_prompt} samples"
            + (
                f" per objective run ({len(calibration['objectives'])} runs)"
                if m.name == "rewarded_soups"
                else ""
            ),
            "trainable parameters": train.get("trainable_params"),
            "training time (s)": train.get("fit_seconds"),
        }
    )
    prompts = prompt_split(m, cfg.data, load_tokenizer(cfg.model))[1][: m.eval.num_prompts]
    result = evaluate_runs(
        [ctx.run_dir, *map(Path, m.eval.compare)],
        prompts,
        m,
        load_rewards(cfg.reward, calibration),
        calibration,
        ctx.run_dir / "pareto",
        report,
        cfg.seed,
        ctx.autocast,
    )
    report.write(ctx.run_dir / "report.md")
    return result


def eval_pareto(cfg, out_dir: Path, report: Report) -> dict:
    """`steerable-eval run=<clp or rewarded_soups run> eval=pareto`: the same evaluation as the run's eval stage."""
    run = Path(cfg.run)
    kind = run_kind(run)
    if kind not in ("clp", "rewarded_soups"):
        raise ValueError(f"eval=pareto needs a clp or rewarded_soups run; {run} is method={kind}")
    m = run_config(run, "method", RewardedSoupsConfig if kind == "rewarded_soups" else CLPConfig)
    data = run_config(run, "data", DataConfig)
    rewards = run_rewards(run, cfg.reward)
    calibration = read_calibration(run)
    prompts = prompt_split(m, data, load_tokenizer(run_model_config(run)))[1][: cfg.eval.num_prompts]
    return evaluate_runs(
        [run, *map(Path, m.eval.compare)],
        prompts,
        m,
        load_rewards(rewards, calibration),
        calibration,
        out_dir,
        report,
        cfg.seed,
    )
