"""`steerable-eval run=<multirun folder | [runs]> eval=leaderboard`: every arm of a benchmark suite on the same
request grid, prompts and objectives, through the `SteerablePolicy` layer only (this module names no method),
ranked by hypervolume in leaderboard.md with bootstrap intervals, its cost and its exact training command,
plus the front plot and one dial plot per axis. The same function is every method's eval stage, on one run.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from steerable.backbone.loading import load_tokenizer
from steerable.config.benchmark import BenchmarkConfig
from steerable.config.schema import EvalConfig
from steerable.evaluation.answers import Answers, answer_grid
from steerable.evaluation.runner import wandb_eval_run
from steerable.evaluation.steering import Interval, row_statistic, with_intervals
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


@dataclass
class Row:
    """One line of the leaderboard: an arm, or another decoding of an arm's runs (`Arm (logit mixing)`)."""

    name: str
    arm: Arm
    answers: Answers = field(default_factory=lambda: Answers([]))
    metrics: dict[str, Interval | None] = field(default_factory=dict)

    @property
    def hypervolume(self) -> float:
        hv = self.metrics.get("hypervolume")
        return hv.value if hv is not None else float("-inf")


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
        stat = row_statistic(row.answers.cells, names, suite.reference, default)
        row.metrics = with_intervals(stat, row.answers.cells[0].scores.shape[0], suite.bootstrap, cfg.seed)
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
    for run in arm.runs:
        try:
            policy: SteerablePolicy = load_policy(run)
        except (FileNotFoundError, RunDirError) as err:
            log.warning("leaderboard: %s left out, it has no trained policy (%s)", run, err)
            continue
        policy.generation = cfg.generation
        policy.to("cuda" if cfg.hardware.accelerator == "gpu" and torch.cuda.is_available() else "cpu")
        views = {arm.name: policy, **{f"{arm.name} ({k})": v for k, v in policy.alternatives().items()}}
        for name, view in views.items():
            log.info("leaderboard: %s on %d requests x %d prompts (%s)", name, len(grid), len(prompts), run)
            sampling = settings(suite, cfg.seed)
            answers = answer_grid(view, grid, default, prompts, stack, sampling, autocast)
            row = rows.setdefault(name, Row(name, arm))
            row.answers.cells += answers.cells
            row.answers.decode_tokens += answers.decode_tokens
            row.answers.decode_seconds += answers.decode_seconds
        del policy, views
    return list(rows.values())


def arm_cost(arm: Arm) -> dict[str, float | None]:
    """What training the arm spent, summed over its runs and their stages (from each stage's recorded cost),
    its trainable parameters (as the stages report them) and the parameters it stores for inference."""
    total: dict[str, float | None] = dict.fromkeys(COST_KEYS, 0.0)
    trainable: float | None = None
    for run in arm.runs:
        for stage, summary in finished_summaries(run).items():
            if stage == EVAL_STAGE:
                continue
            cost = summary.get(COST_KEY) or {}
            for key in COST_KEYS:
                total[key] = None if total[key] is None or key not in cost else total[key] + cost[key]
            if isinstance(summary.get("trainable_params"), int):
                trainable = (trainable or 0) + summary["trainable_params"]
    total["trainable_params"] = trainable
    total["stored_params"] = float(sum(stored_parameters(run) for run in arm.runs))
    return total
