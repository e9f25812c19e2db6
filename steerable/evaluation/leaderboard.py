"""`steerable-eval run=<multirun folder | [runs]> eval=leaderboard`: every arm of a benchmark suite on the same
request grid, prompts and objectives, through the `SteerablePolicy` layer only (this module names no method),
ranked by hypervolume in leaderboard.md with bootstrap intervals, its cost and its exact training command,
plus the front plot and one dial plot per axis. The same function is every method's eval stage, on one run.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steerable.backbone.loading import load_tokenizer
from steerable.config.benchmark import BenchmarkConfig
from steerable.config.schema import EvalConfig
from steerable.evaluation.answers import answer_grid
from steerable.evaluation.rows import Row
from steerable.evaluation.runner import wandb_eval_run
from steerable.evaluation.steering import finite_stats, row_statistic, with_intervals
from steerable.evaluation.suite import (
    Arm,
    default_request,
    find_runs,
    group_arms,
    load_suite,
    requests,
    suite_prompts,
)
from steerable.generation import GenerationSettings, settings_from
from steerable.hardware import inference_autocast
from steerable.pipeline import COST_KEY, finished_summaries
from steerable.policies.base import SteerablePolicy
from steerable.policies.runs import run_model_config, stored_parameters
from steerable.report import Report
from steerable.rewards.base import RewardStack, build_reward_source
from steerable.run_dir import RunDirError

log = logging.getLogger(__name__)

COST_KEYS = ("seconds", "samples_generated", "tokens_generated", "tokens_trained")
EVAL_STAGE = "eval"  # a method's evaluation stage: not training, so not part of an arm's cost


PolicyLoader = Callable[[Path], SteerablePolicy]


def eval_leaderboard(
    cfg: EvalConfig, out_dir: Path, report: Report, load_policy: PolicyLoader
) -> dict[str, Any]:
    """Every arm of the suite on its grid: leaderboard.md, front.png, dial_<objective>.png, results.json.
    `load_policy(run)` is the registry's (each run's method loads its own policy; this module names none)."""
    from steerable.evaluation.leaderboard_report import write_leaderboard

    runs = find_runs(cfg.run)
    suite = load_suite(cfg.benchmark, runs, cfg.eval.suite.given())
    if cfg.eval.suite.given():
        report.section("Changed from the suite").key_values(cfg.eval.suite.given())
    arms = group_arms(runs, suite)
    prompts = suite_prompts(runs, suite, load_tokenizer(run_model_config(runs[0])))
    stack = reward_stack(suite)  # loaded once: the hh suite's reward models are large
    rows = [row for arm in arms for row in answer_arm(arm, suite, cfg, prompts, stack, load_policy)]
    names = list(suite.objectives)
    default = default_request(suite).weights
    for row in rows:
        row.align_seeds()
        replicas = [a.cells for a in row.by_seed.values()]
        stat = row_statistic(replicas, names, suite.reference, default)
        every_prompt = np.arange(replicas[0][0].scores.shape[0])
        row.metrics = with_intervals(stat, len(every_prompt), suite.bootstrap, cfg.seed, len(replicas))
        if len(replicas) > 1:
            row.per_seed = {
                s: finite_stats(stat(every_prompt, np.array([i]))) for i, s in enumerate(row.by_seed)
            }
    rows.sort(key=lambda r: -r.hypervolume)
    costs = {arm.name: arm_cost(arm) for arm in arms}
    with wandb_eval_run(cfg, out_dir):  # Report.write publishes to it (logger=wandb)
        result = write_leaderboard(suite, rows, costs, out_dir, report)
        report.write(out_dir / "report.md")
    return result


def reward_stack(suite: BenchmarkConfig) -> RewardStack:
    """The suite's objectives, each scored by its own reward spec (in the suite's axis order)."""
    return RewardStack({name: build_reward_source(o.reward) for name, o in suite.objectives.items()})


def settings(suite: BenchmarkConfig, seed: int) -> GenerationSettings:
    """The suite's `sampling`, with its batch size and the run's seed."""
    return settings_from(suite.sampling, batch_size=suite.batch_size, seed=seed)


def answer_arm(
    arm: Arm,
    suite: BenchmarkConfig,
    cfg: EvalConfig,
    prompts: list[list[dict]],
    stack: RewardStack,
    load_policy: PolicyLoader,
) -> list[Row]:
    """The arm's runs through their policies on the grid: one row, plus one per alternative decoding. A run
    that never finished training (a failed job) is left out with a warning; an arm left with no run is listed
    under "Arms without a run"."""
    grid, default = requests(suite), default_request(suite)
    autocast = functools.partial(inference_autocast, cfg.hardware)
    rows: dict[str, Row] = {}
    for seed, runs in arm.seeds().items():
        for run in runs:
            try:
                policy: SteerablePolicy = load_policy(run)
            except (FileNotFoundError, RunDirError) as err:
                log.warning("leaderboard: %s left out, it has no trained policy (%s)", run, err)
                continue
            policy.generation = cfg.generation
            policy.to("cuda" if cfg.hardware.accelerator == "gpu" and torch.cuda.is_available() else "cpu")
            views = {arm.name: policy, **{f"{arm.name} ({k})": v for k, v in policy.alternatives().items()}}
            for name, view in views.items():
                log.info(
                    "leaderboard: %s on %d requests x %d prompts (%s)", name, len(grid), len(prompts), run
                )
                sampling = settings(suite, cfg.seed)
                answers = answer_grid(view, grid, default, prompts, stack, sampling, autocast)
                rows.setdefault(name, Row(name, arm)).add(seed, answers)
            del policy, views
    return list(rows.values())


def arm_cost(arm: Arm) -> dict[str, Any]:
    """What training one replica of the arm spent: a seed's runs and their stages summed (from each stage's
    recorded cost), the mean over seeds when the arm was trained on several (each seed's own cost is then
    under `per_seed`, and the budget holds when every seed is within it); its trainable parameters (as the
    stages report them) and the parameters one replica stores for inference."""
    per_seed = [_replica_cost(runs) for runs in arm.seeds().values()]
    if len(per_seed) == 1:
        return {**per_seed[0], "seeds": 1}
    mean = {
        key: None if any(c[key] is None for c in per_seed) else sum(c[key] for c in per_seed) / len(per_seed)
        for key in per_seed[0]
    }
    return {**mean, "seeds": len(per_seed), "per_seed": per_seed}


def _replica_cost(runs: list[Path]) -> dict[str, float | None]:
    total: dict[str, float | None] = dict.fromkeys(COST_KEYS, 0.0)
    trainable: float | None = None
    for run in runs:
        for stage, summary in finished_summaries(run).items():
            if stage == EVAL_STAGE:
                continue
            cost = summary.get(COST_KEY) or {}
            for key in COST_KEYS:
                total[key] = None if total[key] is None or key not in cost else total[key] + cost[key]
            if isinstance(summary.get("trainable_params"), int):
                trainable = (trainable or 0) + summary["trainable_params"]
    total["trainable_params"] = trainable
    total["stored_params"] = float(sum(stored_parameters(run) for run in runs))
    return total
