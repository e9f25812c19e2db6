"""The list of methods, found by walking `steerable.methods`: every package there that exports `SPEC` (or
`SPECS`) is a method, and everything central is derived from those specs — Hydra's `method_schema_<name>`
configs, the stages a run may select, the start-up checks, `steerable-eval` kinds and the policy loader that
`steerable-generate` uses. Adding a method therefore touches only its own package, its conf/method file and
its tests.

Stage functions, evaluations and policy loaders are named as "module:attr" strings and imported only when
used, so the CLIs import no training code until a run needs it. A target starting with "." is relative to the
package that declares the spec (".policy:load" in `steerable.methods.pcm` is `steerable.methods.pcm.policy:load`)
and a stage's function is by default `<name>_stage` of the package's `stages` module, so a spec names each
function once; `specs()` hands out every target absolute.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerable.config.schema import ConfigError

if TYPE_CHECKING:
    from steerable.pipeline import StageResults, StageSummary, Step

PACKAGE = "steerable.methods"


def resolve(target: str) -> Any:
    """The object a "package.module:attr" string names."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Stage:
    """One step of a method. `run(ctx: RunContext, done: StageResults) -> StageSummary` is a "module:function"
    target, by default ".stages:<name>_stage". `done` holds only what the stage declares: `requires`, earlier
    stages whose results it reads (they run first when this run has not finished them), and `reads`, stages
    whose results it uses only if they have finished (never run for it). Reading anything else is an error
    naming the stage. `produces`: the summary keys naming the files or folders the stage makes (what other
    stages read with `done.artifact(name, key)`); a stage that returns without one fails and runs again."""

    name: str
    run: str = ""
    requires: tuple[str, ...] = ()
    doc: str = ""
    reads: tuple[str, ...] = ()
    produces: tuple[str, ...] = ()


def train_then_eval(train: str = "", train_doc: str = "", eval_doc: str = "") -> tuple[Stage, Stage]:
    """The stages of a method that trains one model and reports on it, declared once for all such methods:
    `train` (its function `train` when not ".stages:train_stage"), then `eval`, which needs it and writes the
    run's report."""
    return (
        Stage("train", train, doc=train_doc),
        Stage("eval", requires=("train",), doc=eval_doc, produces=("report",)),
    )


@dataclass(frozen=True)
class Evaluation:
    """A `steerable-eval eval=<kind>` entry owned by a method: `run(cfg: EvalConfig, out_dir, report) -> dict`.
    `reads` says what the evaluated run must be: a trained "policy" or a "scorer" (reward/attribute model)."""

    kind: str
    run: str
    reads: str = "policy"
    doc: str = ""


def no_check(cfg: Any) -> None:
    """Methods without cross-group rules."""


def needs_responses(cfg: Any) -> None:
    """Methods that learn from replies cannot train on a prompts-only data set."""
    if cfg.data.format == "prompts":
        raise ConfigError(f"method={cfg.method.name} needs responses; data.format=prompts has none")


@dataclass(frozen=True)
class MethodSpec:
    """Everything the rest of the project needs to know about a method.

    - `config`: the method's dataclass (`method.*` keys), registered as `method_schema_<name>`; its default
      `name` is the method's name (what `method=<name>` selects).
    - `stages`: in run order; `method.stages` selects from these (null = all).
    - `check(cfg: TrainConfig)`: method x data x reward rules, run when the config is validated, before any
      folder or model exists.
    - `evaluation`: the method's own `steerable-eval` kind, if any (the generic kinds serve every policy).
    - `policy`: "module:load" target (".policy:load" in the method's package), `load(run_dir) ->
      SteerablePolicy`; null = the run is not a policy (reward and attribute models).
    - `needs`: overrides that make the default config valid for this method, i.e. what a user must add (reward
      sources, a preference data set), as an example; `--help` prints them and tests compose with them.
    """

    summary: str
    config: type
    stages: tuple[Stage, ...]
    check: Callable[[Any], None] = no_check
    evaluation: Evaluation | None = None
    policy: str | None = "steerable.policies.plain:load_plain_policy"
    needs: tuple[str, ...] = ()
    paper: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def anchored(self, package: str) -> MethodSpec:
        """This spec with every target absolute: relative ones (".module:attr") and default stage functions
        resolved against `package`, the one that declares it."""
        stages = tuple(
            replace(s, run=absolute(s.run or f".stages:{s.name}_stage", package)) for s in self.stages
        )
        evaluation = self.evaluation and replace(self.evaluation, run=absolute(self.evaluation.run, package))
        policy = self.policy and absolute(self.policy, package)
        return replace(self, stages=stages, evaluation=evaluation, policy=policy)


def absolute(target: str, package: str) -> str:
    """A "module:attr" target as written in `package`: one starting with "." is relative to it."""
    return package + target if target.startswith(".") else target


@functools.cache
def specs() -> dict[str, MethodSpec]:
    """Every method spec by name, in discovery order (packages sorted by name)."""
    found: dict[str, MethodSpec] = {}
    package = importlib.import_module(PACKAGE)
    packages = sorted(i.name for i in pkgutil.iter_modules(package.__path__) if i.ispkg)
    for name in packages:
        module = importlib.import_module(f"{PACKAGE}.{name}")
        declared = list(getattr(module, "SPECS", ())) + ([module.SPEC] if hasattr(module, "SPEC") else [])
        for spec in declared:
            if spec.name in found:
                raise RuntimeError(f"method {spec.name!r} is declared twice ({module.__name__})")
            found[spec.name] = spec.anchored(module.__name__)
    return found


def spec_of(name: str) -> MethodSpec:
    try:
        return specs()[name]
    except KeyError:
        raise ConfigError(f"method={name} is not a method; methods: {sorted(specs())}") from None


def check_stages(spec: MethodSpec, selected: list[str]) -> None:
    bad = [s for s in selected if s not in spec.stage_names]
    if bad or not selected:
        raise ConfigError(
            f"method.stages={list(selected)} is not valid for {spec.name}: {bad} unknown; "
            f"allowed: {spec.stage_names}"
        )


def check_train_config(cfg: Any) -> Any:
    """Fill `method.stages` (null = every stage) and run the method's own rules; returns `cfg`."""
    spec = spec_of(cfg.method.name)
    if cfg.method.stages is None:
        cfg.method.stages = spec.stage_names
    check_stages(spec, list(cfg.method.stages))
    spec.check(cfg)
    return cfg


def stage_functions(spec: MethodSpec, ctx: Any) -> dict[str, Step]:
    """The stages bound to a run context, as the pipeline runs them (each with what it may read). After each
    stage the run's saved policy (if it has one by then) declares the run's kind, the method's name."""
    from steerable.pipeline import Step

    def bind(stage: Stage) -> Callable[[StageResults], StageSummary]:
        def run_stage(done: StageResults) -> StageSummary:
            from steerable.policies.runs import declare_kind
            from steerable.run_dir import is_writer

            summary = resolve(stage.run)(ctx, done)
            if is_writer():
                declare_kind(ctx.run_dir, spec.name)
            return summary

        return run_stage

    return {
        stage.name: Step(bind(stage), stage.requires, stage.reads, stage.produces) for stage in spec.stages
    }


def load_policy(run_dir: Path | str) -> Any:
    """A finished run as a `SteerablePolicy`, loaded by its method's own loader (found from the run's kind)."""
    from steerable.policies.runs import run_kind

    kind = run_kind(Path(run_dir))
    spec = spec_of(kind)
    if spec.policy is None:
        raise ConfigError(
            f"run={run_dir} is a method={kind} run, a scorer and not a policy: it cannot generate "
            "(evaluate it with steerable-eval eval=reward_accuracy)"
        )
    return resolve(spec.policy)(Path(run_dir))


def evaluations() -> dict[str, Evaluation]:
    """Method-owned `steerable-eval` kinds by name (several methods may share one, e.g. reward_accuracy)."""
    kinds: dict[str, Evaluation] = {}
    for spec in specs().values():
        if spec.evaluation is not None:
            kinds.setdefault(spec.evaluation.kind, spec.evaluation)
    return kinds


def describe() -> str:
    """The methods for `steerable-train --help`: name, what it does, and its stages with what each needs."""
    lines = ["== Methods (method=NAME; method.stages=[...] picks stages, default all) =="]
    for spec in specs().values():
        lines.append(f"  {spec.name:<16} {spec.summary}")
        if spec.needs:
            lines.append(f"      (give it e.g. {' '.join(spec.needs)})")
        for stage in spec.stages:
            said = [f"needs {', '.join(stage.requires)}"] if stage.requires else []
            said += [f"uses {', '.join(stage.reads)} if run"] if stage.reads else []
            said += [f"produces {', '.join(stage.produces)}"] if stage.produces else []
            needs = f" ({'; '.join(said)})" if said else ""
            doc = f": {stage.doc}" if stage.doc else ""
            lines.append(f"      {stage.name}{needs}{doc}")
    return "\n".join(lines)
