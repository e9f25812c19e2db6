"""Run a method's stages in order; each finished stage leaves a marker with its summary and is skipped on re-run."""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerable.budget import Spend, spent
from steerable.run_dir import RunDirError, contained, is_writer, write_text_atomic

log = logging.getLogger(__name__)

COST_KEY = "cost"  # in every stage summary: seconds, samples/tokens generated, tokens trained
SKIPPED_KEY = "skipped"  # in the summary of a stage that made nothing on purpose: why (it produces nothing)
StageSummary = dict[str, Any]  # what a stage returns and its marker holds (JSON: numbers, strings, paths)
# Stage names a method once used, by today's name: a run folder made before the rename holds the old marker.
FORMER_NAMES = {"eval": ("report", "evaluate")}


class StageContractError(RuntimeError):
    """A stage read a result it did not declare, or did not make an artifact it declares (a bug in the stage
    or its declaration, not a user error)."""


@dataclass(frozen=True)
class Step:
    """A stage as the pipeline runs it. `requires`: the stages whose results it reads and which run first
    when this run has not finished them (make-style); `reads`: results it uses only if they exist (never run
    for it). Anything else is out of its reach. `produces`: the summary keys naming the files or folders it
    makes, the only keys other stages may read with `artifact`; it must name each (an existing path) or fail."""

    run: Callable[[StageResults], StageSummary]
    requires: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    produces: tuple[str, ...] = ()


def stage_marker(run_dir: Path, name: str) -> Path:
    return run_dir / "stages" / f"{name}.json"


class StageResults:
    """The summaries of a run's finished stages, as one stage sees them: only those it declared.

    The pipeline's own instance sees every stage; `for_stage` gives the view a stage function gets, which
    shares the run's state (what finished, what is running) and refuses an undeclared name, so a stage's
    declaration and what it reads cannot drift apart."""

    def __init__(
        self,
        run_dir: Path,
        steps: Mapping[str, Step],
        named: set[str] | frozenset = frozenset(),
        read_only: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.steps = dict(steps)
        self.named = named
        self.read_only = read_only
        self.summaries: dict[str, StageSummary] = {
            n: checked_marker(self.run_dir, n, named)
            for n in steps
            if stage_marker(self.run_dir, n).is_file()
        }
        self.running: list[str] = []
        self.announced: set[str] = set()  # run or said skipped here: no "skipping" line when required again
        self.stage: str | None = None  # whose view this is (None: the pipeline's, unrestricted)

    @classmethod
    def finished(
        cls, run_dir: Path, names: Sequence[str], named: set[str] | frozenset = frozenset()
    ) -> StageResults:
        """The finished stages of a run, read-only: requiring one the run has not finished is an error naming
        it (evaluation and inference never train)."""
        results = cls(Path(run_dir), {name: Step(never_run) for name in names}, named, read_only=True)
        # reading a finished run skips nothing: no "skipping" lines
        results.announced.update(results.summaries)
        return results

    def for_stage(self, name: str) -> StageResults:
        """What stage `name` may see: its `requires` and `reads`, over this run's shared state."""
        view = copy.copy(self)  # shallow: summaries, running and announced stay the run's own
        view.stage = name
        return view

    def run(self, name: str) -> StageSummary:
        """Run stage `name` unless this run has finished it; its summary either way (in a stage's view, only
        a stage it requires)."""
        self._declared(name, to_run=True)
        if name in self.summaries:
            if name not in self.announced:
                log.info("stage %s already finished in %s; skipping", name, self.run_dir)
                self.announced.add(name)
            return self.summaries[name]
        self._check_runnable(name)
        log.info("stage %s: start", name)
        self.running.append(name)
        started, before, finished = time.monotonic(), spent(), set(self.summaries)
        try:
            summary = self.steps[name].run(self.for_stage(name))
        finally:
            self.running.pop()
        self._check_produced(name, summary)  # before the marker: a stage that broke its word runs again
        seconds = time.monotonic() - started
        summary = {**summary, COST_KEY: self._own_cost(seconds, before, finished)}
        write_text_atomic(
            stage_marker(self.run_dir, name), json.dumps(summary, indent=2, sort_keys=True, default=str)
        )
        self.summaries[name] = json.loads(stage_marker(self.run_dir, name).read_text())
        self.announced.add(name)
        log.info("stage %s: done in %d:%02d", name, seconds // 60, seconds % 60)
        return self.summaries[name]

    def _check_runnable(self, name: str) -> None:
        """A missing prerequisite is one line naming who needs it; a cycle is a bug in the declarations."""
        if self.read_only:
            raise RunDirError(
                f"{self.run_dir} has not finished its {name} stage (stages/{name}.json is missing)"
            )
        if name not in self.steps:
            raise RunDirError(
                f"stage {self.stage or name} needs {name}, which is not a stage of this run's method "
                f"(it has {list(self.steps)})"
            )
        refuse_former_marker(self.run_dir, name)
        if name in self.running:
            raise StageContractError(f"stage dependency cycle: {' -> '.join([*self.running, name])}")

    def _check_produced(self, name: str, summary: StageSummary) -> None:
        """Each artifact stage `name` declares is named in its summary and exists inside the run (or in a
        folder the config names); a stage that skipped itself (`SKIPPED_KEY`) made none."""
        if SKIPPED_KEY in summary:
            return
        for key in self.steps[name].produces:
            value = summary.get(key)
            if not isinstance(value, str) or not value:
                raise StageContractError(
                    f"stage {name} declares produces {key}, but its summary has no {key}"
                )
            try:
                path = contained(self.run_dir, value, self.named, field=f"stage {name}'s {key}")
            except RunDirError as err:
                raise StageContractError(f"stage {name} produces {key} outside its run: {err}") from None
            if is_writer() and not path.exists():  # other ranks may not see rank 0's files yet
                raise StageContractError(f"stage {name} declares produces {key}, but {value} does not exist")

    def _own_cost(self, seconds: float, before: Spend, finished: set[str]) -> dict[str, float]:
        """Wall time and spend of the stage that just ran, less those of the stages it required on the way
        (each records its own), so a run's stages sum to what the run spent."""
        cost = {"seconds": seconds, **spent().minus(before).as_dict()}
        for upstream in set(self.summaries) - finished:
            for key, value in self.summaries[upstream].get(COST_KEY, {}).items():
                cost[key] -= value
        return cost

    def _declared(self, name: str, to_run: bool = False) -> None:
        """Refuse a name this view's stage did not declare (`to_run`: as a requirement, which may run)."""
        if self.stage is None:
            return
        step = self.steps[self.stage]
        if name in step.requires or (name in step.reads and not to_run):
            return
        where = "reads= only, which never runs it" if name in step.reads else "neither requires= nor reads="
        raise StageContractError(
            f"stage {self.stage} reads stage {name}'s result, which it declares in {where}: declare it in "
            f"the stage's requires= (run first when missing) or reads= (used only if finished)"
        )

    def require(self, name: str) -> StageSummary:
        """The summary of a required stage, running it now when this run has not finished it yet."""
        return self.run(name)

    def __getitem__(self, name: str) -> StageSummary:
        """A required stage's summary (run first when missing), or a finished optional one's."""
        self._declared(name)
        if name in self.summaries:
            return self.summaries[name]
        if self.stage is None or name in self.steps[self.stage].requires:
            return self.run(name)
        raise StageContractError(
            f"stage {self.stage} reads {name}, which has not run in {self.run_dir}: a reads= result may be "
            "missing, so test it with `in` or `get` first"
        )

    def get(self, name: str, default: StageSummary | None = None) -> StageSummary | None:
        """A declared stage's summary if it has finished (never runs it)."""
        self._declared(name)
        return self.summaries.get(name, default)

    def __contains__(self, name: object) -> bool:
        """Whether a declared stage has finished (never runs it)."""
        if not isinstance(name, str):
            return False
        self._declared(name)
        return name in self.summaries

    def artifact(self, name: str, key: str = "path") -> Path:
        """The folder or file a stage made (its summary's `key`, declared in its `produces`), as `self[name]`
        finds it (a required stage runs first), followed only inside the run or to an artifact the run's
        config names."""
        self._declared(name)
        step = self.steps.get(name)
        if self.stage is not None and step is not None and key not in step.produces:
            raise StageContractError(
                f"stage {self.stage} reads stage {name}'s {key}, which {name} does not declare in produces= "
                f"(it declares {list(step.produces)})"
            )
        summary = self[name]
        value = summary.get(key)
        if not isinstance(value, str) or not value:
            why = f" (it skipped: {summary[SKIPPED_KEY]})" if SKIPPED_KEY in summary else ""
            raise RunDirError(f"{self.run_dir}: stages/{name}.json has no {key}{why}")
        return contained(self.run_dir, value, self.named, field=f"stages/{name}.json {key}")


def never_run(done: StageResults) -> StageSummary:
    """The step of a read-only run: its stages are read, never run (`_check_runnable` refuses first)."""
    raise AssertionError("a read-only run ran a stage")


def refuse_former_marker(run_dir: Path, name: str) -> None:
    """A folder made before a stage was renamed holds its marker under the old name: say so in one line
    rather than run the finished stage again."""
    for old in FORMER_NAMES.get(name, ()):
        if stage_marker(run_dir, old).is_file():
            raise RunDirError(
                f"{run_dir} was made before the {old} stage was renamed {name}: rename "
                f"stages/{old}.json to stages/{name}.json to resume it"
            )


# Summary keys that hold paths, and method config keys that name an artifact made elsewhere (`named_artifacts`)
PATH_FIELDS = ("path", "apm", "policy", "experts", "annotated")


def finished_summaries(run_dir: Path) -> dict[str, StageSummary]:
    """Every finished stage's summary of a run, by stage name, read-only (what a benchmark reads for cost:
    each summary's `cost` and, for trained stages, `trainable_params`)."""
    return {p.stem: json.loads(p.read_text()) for p in sorted((Path(run_dir) / "stages").glob("*.json"))}


def named_artifacts(method: Any) -> set[str]:
    """Artifact folders outside the run that its method config names (method.apm=, method.annotated=, ...)."""
    return {v for k in PATH_FIELDS if isinstance(v := getattr(method, k, None), str) and v}


def checked_marker(run_dir: Path, name: str, named: set[str] | frozenset) -> StageSummary:
    """A finished stage's summary; the artifact paths in it must stay inside the run (or be named in config)."""
    summary = json.loads(stage_marker(run_dir, name).read_text())
    for key in PATH_FIELDS:
        if isinstance(summary.get(key), str):
            contained(run_dir, summary[key], named, field=f"stages/{name}.json {key}")
    return summary


def run_stages(
    run_dir: Path,
    steps: Mapping[str, Step],
    selected: Sequence[str],
    named: set[str] | frozenset = frozenset(),
) -> dict[str, StageSummary]:
    """Run the `selected` stages in order (each sees only what its step declares); every finished stage's
    summary by name. `named`: artifact folders outside the run that the current config names (reused stages)."""
    unknown = [s for s in selected if s not in steps]
    if unknown:
        raise ValueError(f"method.stages has unknown stage(s) {unknown}; this method has {list(steps)}")
    results = StageResults(run_dir, steps, named)
    for name in selected:
        results.run(name)
    return dict(results.summaries)
