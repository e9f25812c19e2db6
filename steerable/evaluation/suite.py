"""A benchmark suite at evaluation time: its request grid, its held-out prompts, and the runs of a multirun
folder (or a list of runs) grouped into arms. Method-neutral: runs are read through `policies.runs` and
steered through `SteerablePolicy.controls_for`."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from steerable.config.benchmark import BenchmarkConfig
from steerable.config.sampling import check_sampling, nest_flat_sampling
from steerable.config.schema import ConfigError, DataConfig
from steerable.data.demo import HELDOUT_TEMPLATES, TOPICS, demo_prompts
from steerable.data.prompts import HeldOut, fitting_prompts, prompt_sets
from steerable.policies.base import Objective, Request
from steerable.policies.runs import run_config, run_kind, run_overrides, run_section, saved_config

TRAIN_COMMAND = "steerable-train"


@dataclass
class Arm:
    """One row group of the leaderboard: a method with its overrides, trained as one run or as a sweep of
    runs (e.g. one fixed policy per weighting), plotted as one front; trained on several seeds, each seed's
    runs are one replica and the row is their mean."""

    name: str
    runs: list[Path] = field(default_factory=list)

    def commands(self) -> list[str]:
        """The exact training command of each run, from Hydra's record of its overrides."""
        return [" ".join([TRAIN_COMMAND, *run_overrides(run)]) for run in self.runs]

    def seeds(self) -> dict[int | None, list[Path]]:
        """The arm's runs by training `seed`, in the order found: each seed's runs are one replica of the arm
        (one run, or a sweep such as one fixed policy per weighting). A run without a saved seed is None."""
        replicas: dict[int | None, list[Path]] = {}
        for run in self.runs:
            replicas.setdefault(run_seed(run), []).append(run)
        return replicas


def run_seed(run: Path) -> int | None:
    """The `seed` a run was trained with, from its saved config."""
    seed = OmegaConf.select(saved_config(run), "seed", default=None)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"{run}: the saved config's seed must be an integer, got {seed!r}")
    return seed


# ------------------------------------------------------------------------------------------- requests


def simplex_grid(names: list[str], step: float) -> list[dict[str, float]]:
    """Every weighting of `names` whose weights are multiples of `step` (summing to 1), ordered by the first
    objective's weight (then the second's, ...)."""
    parts = round(1 / step)
    points = [
        counts for counts in itertools.product(range(parts + 1), repeat=len(names)) if sum(counts) == parts
    ]
    return [{n: c / parts for n, c in zip(names, counts, strict=True)} for counts in sorted(points)]


def objectives(suite: BenchmarkConfig) -> dict[str, Objective]:
    return {name: Objective(o.attribute, o.direction, o.instruction) for name, o in suite.objectives.items()}


def requests(suite: BenchmarkConfig) -> list[Request]:
    """The request grid every arm answers."""
    meaning = objectives(suite)
    return [Request(w, meaning) for w in simplex_grid(list(suite.objectives), suite.grid_step)]


def default_request(suite: BenchmarkConfig) -> Request:
    """`benchmark.default`, or uniform weights."""
    names = list(suite.objectives)
    weights = dict(suite.default) if suite.default else {n: 1 / len(names) for n in names}
    return Request({n: float(weights[n]) for n in names}, objectives(suite))


# ---------------------------------------------------------------------------------------------- runs


def find_runs(run: Any) -> list[Path]:
    """A run folder, a multirun folder of runs (its jobs in job order), or a list of either."""
    if isinstance(run, list | tuple) or OmegaConf.is_list(run):
        return [path for item in run for path in find_runs(str(item))]
    path = Path(run)
    if (path / ".hydra").is_dir():
        return [path]
    jobs = [c for c in path.iterdir() if (c / ".hydra").is_dir()] if path.is_dir() else []
    if not jobs:
        raise ConfigError(f"run={run} is neither a run folder nor a multirun folder of runs")
    return sorted(jobs, key=lambda p: (not p.name.split("-")[0].isdigit(), _job_number(p), p.name))


def _job_number(path: Path) -> int:
    head = path.name.split("-")[0]
    return int(head) if head.isdigit() else 0


def load_suite(
    given: BenchmarkConfig | None, runs: list[Path], changes: dict | None = None
) -> BenchmarkConfig:
    """The suite the runs were trained in (`benchmark` of their saved configs, which must agree apart from
    the arm), or the one given on the command line; `changes` (eval.suite.*, dotted keys) on top."""
    if given is not None:
        return changed_suite(OmegaConf.structured(given), changes)
    found = {run: nest_flat_sampling(run_section(run, "benchmark"), BenchmarkConfig) for run in runs}
    missing = [str(run) for run, suite in found.items() if not suite]
    if missing:
        raise ConfigError(
            f"{missing[0]} was not trained as an arm of a benchmark suite; name one (benchmark=demo)"
        )
    first, *rest = [_yardstick(suite) for suite in found.values()]
    for run, suite in zip(runs[1:], rest, strict=True):
        if suite != first:
            raise ConfigError(f"{run} was trained in another suite than {runs[0]} (benchmark.* differ)")
    roster = [a for suite in found.values() for a in (suite.get("arms") or [])]
    return changed_suite({**first, "arms": list(dict.fromkeys(roster))}, changes)


def _yardstick(section: dict) -> dict:
    """What makes two runs' suites the same yardstick: every benchmark key with the schema's defaults filled
    in (a run saved before a key existed compares equal when it used the default), except the run's own `arm`
    and the roster of `arms` (a suite that gained an arm is still the same suite; the rosters are joined)."""
    merged = OmegaConf.merge(OmegaConf.structured(BenchmarkConfig), section)
    full = OmegaConf.to_container(merged, resolve=True, enum_to_str=True)
    return {k: v for k, v in full.items() if k not in ("arm", "arms")}


def changed_suite(suite: Any, changes: dict | None) -> BenchmarkConfig:
    """`suite` with `changes` (dotted keys under benchmark.*) applied, checked as a composed one is."""
    merged = OmegaConf.merge(OmegaConf.structured(BenchmarkConfig), suite)
    for key, value in (changes or {}).items():
        OmegaConf.update(merged, key, value, merge=False)
    changed: BenchmarkConfig = OmegaConf.to_object(merged)
    check_sampling(changed, "benchmark")
    return changed


def group_arms(runs: list[Path], suite: BenchmarkConfig) -> list[Arm]:
    """Runs grouped by their `benchmark.arm` (a run without one is an arm named by its method), in the
    suite's arm order, then the others in the order found."""
    arms: dict[str, Arm] = {}
    for run in runs:
        section = run_section(run, "benchmark") or {}
        name = section.get("arm") or run_kind(run)
        arms.setdefault(name, Arm(name)).runs.append(run)
    order = {name: i for i, name in enumerate(suite.arms)}
    return sorted(arms.values(), key=lambda a: order.get(a.name, len(order)))


# -------------------------------------------------------------------------------------------- prompts


def suite_prompts(runs: list[Path], suite: BenchmarkConfig, tokenizer: Any) -> list[list[dict]]:
    """Held-out prompts of the task the arms trained on (the first run's data): the demo task's question
    templates that training never uses, else the held-out split."""
    data: DataConfig = run_config(runs[0], "data", DataConfig)
    budget = data.max_length - suite.sampling.max_new_tokens
    if data.format == "demo":
        records = demo_prompts(len(HELDOUT_TEMPLATES) * len(TOPICS))
        prompts = fitting_prompts(records, tokenizer, budget, suite.num_prompts)
    else:
        prompts = prompt_sets(data, tokenizer, budget, held_out=HeldOut(limit=suite.num_prompts))[1]
    if len(prompts) < 2:
        raise ConfigError(
            f"benchmark={suite.name}: {len(prompts)} held-out prompt(s) of data={data.name} fit in "
            f"{budget} tokens (data.max_length - benchmark.sampling.max_new_tokens); a confidence interval needs 2+"
        )
    return prompts
