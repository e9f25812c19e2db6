"""Run a method's stages in order; each finished stage leaves a marker with its summary and is skipped on re-run."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from steerable.budget import Spend, spent
from steerable.run_dir import RunDirError, contained, write_text_atomic

log = logging.getLogger(__name__)

COST_KEY = "cost"  # in every stage summary: seconds, samples/tokens generated, tokens trained
StageFn = Callable[[dict[str, dict]], dict]  # gets the summaries of earlier stages


def stage_marker(run_dir: Path, name: str) -> Path:
    return run_dir / "stages" / f"{name}.json"


class StageResults(dict):
    """Summaries of finished stages by name; `require` runs a missing upstream stage first (make-style)."""

    def __init__(
        self, run_dir: Path, stages: dict[str, StageFn], named: set[str] | frozenset = frozenset()
    ) -> None:
        super().__init__(
            (n, checked_marker(run_dir, n, named)) for n in stages if stage_marker(run_dir, n).is_file()
        )
        self.run_dir = run_dir
        self.stages = stages
        self.named = named
        self.running: list[str] = []
        self.announced: set[str] = (
            set()
        )  # run or reported skipped here: no "skipping" line when required again

    @classmethod
    def finished(
        cls, run_dir: Path, names: Sequence[str], named: set[str] | frozenset = frozenset()
    ) -> StageResults:
        """The finished stages of a run, read-only: requiring one the run has not finished is an error naming
        it (evaluation and inference never train)."""

        def not_run(name: str) -> StageFn:
            def refuse(done: dict) -> dict:
                raise RunDirError(
                    f"{run_dir} has not finished its {name} stage (stages/{name}.json is missing)"
                )

            return refuse

        results = cls(Path(run_dir), {name: not_run(name) for name in names}, named)
        results.announced.update(results)  # reading a finished run skips nothing: no "skipping" lines
        return results

    def run(self, name: str) -> dict:
        if name in self:
            if name not in self.announced:
                log.info("stage %s already finished in %s; skipping", name, self.run_dir)
                self.announced.add(name)
            return self[name]
        if name in self.running:
            raise RuntimeError(f"stage dependency cycle: {' -> '.join([*self.running, name])}")
        log.info("stage %s: start", name)
        self.running.append(name)
        started, before, finished = time.monotonic(), spent(), set(self)
        try:
            summary = self.stages[name](self)
        finally:
            self.running.pop()
        seconds = time.monotonic() - started
        summary = {**summary, COST_KEY: self._own_cost(seconds, before, finished)}
        write_text_atomic(
            stage_marker(self.run_dir, name), json.dumps(summary, indent=2, sort_keys=True, default=str)
        )
        self[name] = json.loads(stage_marker(self.run_dir, name).read_text())
        self.announced.add(name)
        log.info("stage %s: done in %d:%02d", name, seconds // 60, seconds % 60)
        return self[name]

    def _own_cost(self, seconds: float, before: Spend, finished: set[str]) -> dict[str, float]:
        """Wall time and spend of the stage that just ran, less those of the stages it required on the way
        (each records its own), so a run's stages sum to what the run spent."""
        cost = {"seconds": seconds, **spent().minus(before).as_dict()}
        for upstream in set(self) - finished:
            for key, value in self[upstream].get(COST_KEY, {}).items():
                cost[key] -= value
        return cost

    def require(self, name: str) -> dict:
        """The summary of an upstream stage, running it now when this run has not finished it yet."""
        return self.run(name)

    def artifact(self, name: str, key: str = "path") -> Path:
        """The folder or file a stage made (its summary's `key`), followed only inside the run or to an
        artifact the run's config names."""
        value = self.require(name).get(key)
        if not isinstance(value, str) or not value:
            raise RunDirError(f"{self.run_dir}: stages/{name}.json has no {key}")
        return contained(self.run_dir, value, self.named, field=f"stages/{name}.json {key}")


PATH_FIELDS = ("path", "apm", "policy", "experts")


def finished_summaries(run_dir: Path) -> dict[str, dict]:
    """Every finished stage's summary of a run, by stage name, read-only (what a benchmark reads for cost:
    each summary's `cost` and, for trained stages, `trainable_params`)."""
    return {p.stem: json.loads(p.read_text()) for p in sorted((Path(run_dir) / "stages").glob("*.json"))}


def named_artifacts(method: Any) -> set[str]:
    """Artifact folders outside the run that its method config names (method.apm=, method.experts=, ...)."""
    return {v for k in PATH_FIELDS if isinstance(v := getattr(method, k, None), str) and v}


def checked_marker(run_dir: Path, name: str, named: set[str] | frozenset) -> dict:
    """A finished stage's summary; the artifact paths in it must stay inside the run (or be named in config)."""
    summary = json.loads(stage_marker(run_dir, name).read_text())
    for key in PATH_FIELDS:
        if isinstance(summary.get(key), str):
            contained(run_dir, summary[key], named, field=f"stages/{name}.json {key}")
    return summary


def run_stages(
    run_dir: Path,
    stages: dict[str, StageFn],
    selected: Sequence[str],
    named: set[str] | frozenset = frozenset(),
) -> dict[str, dict]:
    """`named`: artifact folders outside the run that the current config names (reused stages)."""
    unknown = [s for s in selected if s not in stages]
    if unknown:
        raise ValueError(f"method.stages has unknown stage(s) {unknown}; this method has {list(stages)}")
    results = StageResults(run_dir, stages, named)
    for name in selected:
        results.run(name)
    return dict(results)
