"""The layering the design promises, checked from the source itself (imports read with `ast`, lazy ones too):
no package-level import cycle, the CLIs and the evaluation library reach no training code, a method lives
in its own package, and no function grows past a screen."""

from __future__ import annotations

import ast
import functools
import inspect
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from steerable.methods.registry import specs

ROOT = Path(__file__).resolve().parents[1] / "steerable"
MAX_FUNCTION_LINES = 60
# At most this many parameters (`self`/`cls` not counted, keyword-only ones counted): a wider signature passes
# loose what belongs together, and gets a parameter object naming the concept (an evaluation setup, a rollout).
MAX_PARAMETERS = 7
# Functions allowed past it, each for a reason that a parameter object would not serve.
WIDE_ALLOWED: dict[str, str] = {
    "steerable.rewards.hf_classifier.HFSequenceClassifierReward.__init__": (
        "a reward factory: its keywords are the user's flat config keys (reward.<name>.*, built as factory(**spec))"
    ),
}
# What the CLIs and the evaluation library may import from a method package: its declaration, its config
# and its inference side; never the modules that train.
NOT_TRAINING = re.compile(r"^steerable\.methods(\.(registry|base)|\.[a-z0-9_]+(\.(config|policy|io))?)?$")


@functools.cache
def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imported(path: Path, name: str) -> set[str]:
    """Every steerable module `path` imports, at module level or inside functions."""
    out: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = import_source(node, package)
            out |= {f"{base}.{a.name}" for a in node.names} | {base}
    known = modules()
    return {as_module(m, known) for m in out if m.startswith("steerable.")}


def import_source(node: ast.ImportFrom, package: str) -> str:
    """The absolute module of `from <module> import ...` written in `package` (relative imports resolved)."""
    base = node.module or ""
    if not node.level:
        return base
    parts = package.split(".")
    return ".".join(parts[: len(parts) - node.level + 1] + [base]).strip(".")


def as_module(name: str, known: dict[str, Path]) -> str:
    """`steerable.a.b.func` -> the module `steerable.a.b` (an imported name is not a module)."""
    while name not in known and "." in name:
        name = name.rpartition(".")[0]
    return name


def package(module: str) -> str:
    """steerable.<package> for modules in a sub-package; top-level modules are their own unit."""
    return ".".join(module.split(".")[:2])


def owner(module: str) -> str:
    """What may share private names: a method's own package (steerable.methods.<name>), else `package`."""
    parts = module.split(".")
    if parts[1:2] == ["methods"] and len(parts) > 2 and (ROOT / "methods" / parts[2]).is_dir():
        return ".".join(parts[:3])
    return package(module)


def private_imports(source: str, name: str, is_package: bool = False) -> list[str]:
    """`from steerable.x import _name` where steerable.x belongs to another package than module `name`."""
    here = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = import_source(node, here)
            if base.startswith("steerable") and owner(base) != owner(name):
                found += [f"{name}: {base}.{a.name}" for a in node.names if a.name.startswith("_")]
    return found


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in modules().items():
        source = package(name)
        for target in imported(path, name):
            if package(target) != source and package(target) != "steerable":
                graph.setdefault(source, set()).add(package(target))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_planted_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_package_level_import_cycle() -> None:
    assert cycles(package_graph()) == []


def test_private_import_finder_finds_planted_ones() -> None:
    planted = "from steerable.training.losses import _hidden, summed_lm_loss\nfrom .base import _key\n"
    assert private_imports(planted, "steerable.methods.dpo.loss") == [
        "steerable.methods.dpo.loss: steerable.training.losses._hidden"
    ]
    assert private_imports("from ..sft.stages import _split\n", "steerable.methods.dpo.stages") == [
        "steerable.methods.dpo.stages: steerable.methods.sft.stages._split"
    ]
    assert private_imports("from .loss import _helper\n", "steerable.methods.dpo.module") == []


def test_no_module_imports_a_private_name_from_another_package() -> None:
    """A helper used across packages is public API: it gets a public name (and a docstring)."""
    found = [
        hit
        for name, path in modules().items()
        for hit in private_imports(path.read_text(), name, path.name == "__init__.py")
    ]
    assert not found, found


def test_cli_and_evaluation_import_no_training_module() -> None:
    offending = {
        f"{name} -> {target}"
        for name, path in modules().items()
        if name.startswith(("steerable.cli", "steerable.evaluation"))
        for target in imported(path, name)
        if target.startswith("steerable.methods") and not NOT_TRAINING.match(target)
    }
    assert not offending, sorted(offending)


def test_evaluation_library_is_method_neutral() -> None:
    offending = {
        f"{name} -> {target}"
        for name, path in modules().items()
        if name.startswith("steerable.evaluation")
        for target in imported(path, name)
        if target.startswith("steerable.methods")
    }
    assert not offending, sorted(offending)


def code_words(path: Path) -> set[str]:
    """The identifiers and non-docstring string literals of a module, split into lower-case words."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            texts.append(node.id)
        elif isinstance(node, ast.Attribute):
            texts.append(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            texts.append(node.value)
    return {word for text in texts for word in re.findall(r"[a-z0-9_]+", text.lower())}


def test_evaluator_names_no_method() -> None:
    """The leaderboard evaluates every run through the policy layer: no method's name appears in the code of
    steerable/evaluation (docstrings may cite papers), so a method added later is evaluated unchanged."""
    methods = set(specs())
    named = {
        f"{path.relative_to(ROOT)}: {sorted(code_words(path) & methods)}"
        for path in (ROOT / "evaluation").rglob("*.py")
        if code_words(path) & methods
    }
    assert not named, sorted(named)


def test_each_method_is_named_only_in_its_own_package() -> None:
    """The proof of the registry: a method's name appears in no central file (checked for methods whose name
    is not also an ordinary word of other code). Other method packages may build on a method by importing it
    (MODPO reuses DPO's pairs, loss and module, as SteerLM reuses the attribute model)."""
    methods = ROOT / "methods"
    for name in ("dpo", "ric", "modpo"):
        spec_package = specs()[name].config.__module__.rsplit(".", 1)[0]
        home = ROOT.parent / Path(*spec_package.split("."))
        word = re.compile(rf"\b{name}\b", re.IGNORECASE)
        central = [p for p in ROOT.rglob("*.py") if not (p.parent != methods and methods in p.parents)]
        outside = [p for p in central if home not in p.parents and word.search(p.read_text())]
        assert not outside, f"{name} is named outside {home}: {outside}"


def test_no_function_is_longer_than_a_screen() -> None:
    long = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, long


def wide_functions(source: str, name: str) -> dict[str, int]:
    """`module.qualname` -> parameter count, for every function of `source` over MAX_PARAMETERS."""
    found = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                a = child.args
                params = [*a.posonlyargs, *a.args, *a.kwonlyargs]
                count = len(params) - (bool(params) and params[0].arg in ("self", "cls"))
                if count > MAX_PARAMETERS:
                    found[f"{name}.{prefix}{child.name}"] = count
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def test_wide_function_finder_finds_planted_ones() -> None:
    planted = textwrap.dedent(
        """
        def narrow(a, b, c, d, e, f, g): ...
        def wide(a, b, c, d, e, f, g, *, h=1): ...
        class Module:
            def __init__(self, a, b, c, d, e, f, g): ...
            def step(self, a, b, c, d, e, f, g, h):
                def inner(a, b, c, d, e, f, g, h, i): ...
        """
    )
    assert wide_functions(planted, "steerable.planted") == {
        "steerable.planted.wide": 8,
        "steerable.planted.Module.step": 8,
        "steerable.planted.Module.step.inner": 9,
    }


def test_no_function_takes_more_than_max_parameters() -> None:
    """Model, tokenizer, sampler and settings travel in parameter objects, not as a dozen loose arguments."""
    wide = sorted(
        f"{found} ({count} parameters)"
        for name, path in modules().items()
        for found, count in wide_functions(path.read_text(), name).items()
        if found not in WIDE_ALLOWED
    )
    assert not wide, wide
    stale = set(WIDE_ALLOWED) - {f for n, p in modules().items() for f in wide_functions(p.read_text(), n)}
    assert not stale, f"allowed but no longer wide (drop them from WIDE_ALLOWED): {sorted(stale)}"


def test_stage_markers_are_read_only_through_stage_results() -> None:
    """Typed stage results: a finished stage's summary is read via `StageResults` (which checks its paths),
    never by opening stages/*.json elsewhere."""
    allowed = {ROOT / "pipeline.py", ROOT / "run_dir.py"}
    readers = [
        str(path.relative_to(ROOT))
        for path in ROOT.rglob("*.py")
        if path not in allowed and re.search(r"""["']stages["']|stages/\*|["']stages/""", path.read_text())
    ]
    assert readers == []


def test_online_modules_share_one_base_and_one_sampler_factory() -> None:
    """Sample -> score -> update loops subclass OnlineModule (no trainer overrides in stages) and build their
    sampler through make_sampler / Engine, never a concrete engine class."""
    from steerable.methods.pcm.module import PCMModule
    from steerable.methods.superhf.module import SuperHFModule
    from steerable.training.online import OnlineModule
    from steerable.training.policy_gradient import PolicyGradientModule

    assert all(issubclass(m, OnlineModule) for m in (SuperHFModule, PCMModule, PolicyGradientModule))
    for path in (ROOT / "methods").rglob("*.py"):
        text = path.read_text()
        assert "trainer_overrides" not in text, path
        # mixture decoding (adapters mixed per example) is HF-only by design: evaluation arms may name it
        if path.parent.name not in ("clp", "pcm") or path.name not in ("evaluate.py",):
            assert "HFSampler(" not in text, path


# ------------------------------------------------------------------------------------------ the stage contract

STAGE_SIGNATURE = {"ctx": "RunContext", "done": "StageResults", "return": "StageSummary"}
READERS = {"require", "get", "artifact", "run"}  # StageResults methods that take a stage name


def test_stage_declarations_name_stages_of_the_method() -> None:
    """`requires` names earlier stages (they may run first, so never a later one: no cycle); `reads` names
    other stages of the same method."""
    bad = []
    for spec in specs().values():
        names = spec.stage_names
        for index, stage in enumerate(spec.stages):
            bad += [
                f"{spec.name}.{stage.name} requires {r}" for r in stage.requires if r not in names[:index]
            ]
            bad += [
                f"{spec.name}.{stage.name} reads {r}"
                for r in stage.reads
                if r not in names or r == stage.name
            ]
            bad += [f"{spec.name}.{stage.name} both" for r in stage.reads if r in stage.requires]
    assert not bad, bad


def test_the_final_evaluation_stage_is_eval_in_every_method() -> None:
    """One name for one role: a stage that evaluates (its function is an eval stage, or its name says it
    evaluates or reports) is `eval`, the last stage of its method."""
    evaluating = re.compile(r"eval|report", re.IGNORECASE)
    bad = [
        f"{spec.name}.{stage.name} ({stage.run})"
        for spec in specs().values()
        for index, stage in enumerate(spec.stages)
        if evaluating.search(f"{stage.name} {stage.run.partition(':')[2]}")
        and (stage.name != "eval" or index != len(spec.stages) - 1 or not stage.run.endswith(":eval_stage"))
    ]
    assert not bad, bad


def test_every_stage_function_has_the_one_typed_signature() -> None:
    from steerable.methods.registry import resolve

    wrong = {}
    for spec in specs().values():
        for stage in spec.stages:
            found = {
                k: getattr(v, "__name__", v) for k, v in inspect.get_annotations(resolve(stage.run)).items()
            }
            if (
                list(inspect.signature(resolve(stage.run)).parameters) != ["ctx", "done"]
                or found != STAGE_SIGNATURE
            ):
                wrong[f"{spec.name}.{stage.name}"] = found
    assert not wrong, (
        f"stage functions must be (ctx: RunContext, done: StageResults) -> StageSummary: {wrong}"
    )


def literal_reads(function: Any, seen: set[Any] | None = None) -> set[str]:
    """The stage names `function` reads from `done` as literals (`done.require("x")`, `done["x"]`, `"x" in
    done`, ...), and those of the steerable functions it hands `done` to, recursively."""
    seen = set() if seen is None else seen
    if function in seen or not getattr(function, "__module__", "").startswith("steerable."):
        return set()
    seen.add(function)
    found: set[str] = set()
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(function)))):
        if isinstance(node, ast.Call) and any(isinstance(a, ast.Name) and a.id == "done" for a in node.args):
            callee = node.func.id if isinstance(node.func, ast.Name) else None
            found |= literal_reads(function.__globals__.get(callee), seen) if callee else set()
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in READERS:
            target, args = node.func.value, node.args
        elif isinstance(node, ast.Subscript):
            target, args = node.value, [node.slice]
        elif isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In | ast.NotIn):
            target, args = node.comparators[0], [node.left]
        else:
            continue
        if (
            isinstance(target, ast.Name)
            and target.id == "done"
            and args
            and isinstance(args[0], ast.Constant)
        ):
            found.add(args[0].value)
    return found


def test_literal_reads_are_found_through_helpers() -> None:
    def helper(done):
        return done.get("b"), "c" in done

    def stage(ctx, done):
        return done.require("a"), done["d"], helper(done)

    stage.__module__ = helper.__module__ = "steerable.planted"
    stage.__globals__["helper"] = helper
    try:
        assert literal_reads(stage) == {"a", "b", "c", "d"}
    finally:
        del stage.__globals__["helper"]


def test_stage_functions_read_only_what_their_stage_declares() -> None:
    """The static half of the contract (the pipeline enforces the rest when a stage runs): every stage name a
    stage function or its helpers read as a literal is in the stage's requires or reads."""
    from steerable.methods.registry import resolve

    undeclared = {
        f"{spec.name}.{stage.name}": sorted(missing)
        for spec in specs().values()
        for stage in spec.stages
        if (missing := literal_reads(resolve(stage.run)) - {*stage.requires, *stage.reads})
    }
    assert not undeclared, undeclared


def literal_artifacts(source: str) -> set[tuple[str, str]]:
    """The (stage, key) of every `x.artifact("stage")` or `x.artifact("stage", "key")` call in `source` whose
    arguments are literals (no key: `StageResults.artifact`'s default)."""
    from steerable.pipeline import StageResults

    default = inspect.signature(StageResults.artifact).parameters["key"].default
    found: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "artifact"
        ):
            args = [*node.args, *(k.value for k in node.keywords if k.arg == "key")]
            if args and all(isinstance(a, ast.Constant) for a in args):
                found.add((args[0].value, args[1].value if len(args) > 1 else default))
    return found


def test_literal_artifacts_are_found_with_the_default_key() -> None:
    source = 'done.artifact("a")\nx.artifact("b", "report")\ndone.artifact(name)\ndone.artifact("c", key="k")'
    assert literal_artifacts(source) == {("a", "path"), ("b", "report"), ("c", "k")}


def test_artifact_reads_name_keys_their_stage_produces() -> None:
    """The static half of `produces` (the pipeline refuses the rest when a stage runs): every literal
    `.artifact("<stage>", "<key>")` in steerable/ names a key that stage declares, in every method of the
    package it is written in (outside a method package: in every method that has the stage)."""
    reads, undeclared = 0, []
    for name, path in modules().items():
        home = [s for s in specs().values() if spec_package(s) == owner(name)] or list(specs().values())
        for stage, key in literal_artifacts(path.read_text()):
            reads += 1
            declared = [s.stage(stage).produces for s in home if stage in s.stage_names]
            if not declared or any(key not in produces for produces in declared):
                undeclared.append(f"{name}: artifact({stage!r}, {key!r})")
    assert reads > 5 and not undeclared, undeclared


def contract_steps() -> dict[str, Any]:
    from steerable.pipeline import Step

    return {
        "train": Step(lambda done: {"path": "train"}),
        "extra": Step(lambda done: {"n": 1}),
        "eval": Step(
            lambda done: {"n": done.require("train")["path"]}, requires=("train",), reads=("extra",)
        ),
    }


def test_a_stage_reading_what_it_did_not_declare_fails_naming_both(tmp_path) -> None:
    from steerable.pipeline import StageContractError, Step, run_stages

    steps = contract_steps()
    reads = {
        "require": lambda done: done.require("extra"),
        "item": lambda done: done["extra"],
        "get": lambda done: done.get("train"),
        "in": lambda done: "train" in done,
        "artifact": lambda done: done.artifact("train"),
        "run": lambda done: done.run("train"),
    }
    run_stages(tmp_path, steps, ["train", "extra"])
    for how, read in reads.items():
        with pytest.raises(
            StageContractError, match=r"^stage sneaky reads stage (extra|train)'s result"
        ) as err:
            run_stages(tmp_path, {**steps, "sneaky": Step(lambda done, r=read: {"x": r(done)})}, ["sneaky"])
        assert "\n" not in str(err.value), how
    with pytest.raises(StageContractError, match=r"stage eval reads stage extra's result.*reads= only"):
        run_stages(
            tmp_path, {**steps, "eval": Step(lambda done: done.require("extra"), reads=("extra",))}, ["eval"]
        )


def test_declared_reads_are_used_only_when_finished_and_requirements_run_first(tmp_path) -> None:
    from steerable.pipeline import StageContractError, StageResults, Step, run_stages

    steps = {**contract_steps(), "eval": Step(lambda done: {"extra": "extra" in done}, reads=("extra",))}
    assert run_stages(tmp_path / "a", steps, ["eval"])["eval"]["extra"] is False  # never runs it
    assert run_stages(tmp_path / "b", steps, ["extra", "eval"])["eval"]["extra"] is True
    indexed = {**steps, "eval": Step(lambda done: done["extra"], reads=("extra",))}
    with pytest.raises(
        StageContractError, match=r"^stage eval reads extra, which has not run in .*`in` or `get`"
    ):
        run_stages(tmp_path / "d", indexed, ["eval"])
    results = run_stages(tmp_path / "c", contract_steps(), ["eval"])  # make-style: train runs first
    assert set(results) == {"train", "eval"} and results["eval"]["n"] == "train"
    assert StageResults.finished(tmp_path / "c", ["train"]).require("train")["path"] == "train"


def test_a_stage_that_does_not_make_what_it_produces_fails_and_leaves_no_marker(tmp_path) -> None:
    from steerable.pipeline import SKIPPED_KEY, StageContractError, Step, run_stages, stage_marker

    forgetful = {
        "declares produces path, but its summary has no path": lambda done: {"n": 1},
        f"declares produces path, but {tmp_path / 'gone'} does not exist": lambda done: {
            "path": str(tmp_path / "gone")
        },
        "produces path outside its run": lambda done: {"path": "/etc"},
    }
    for message, run in forgetful.items():
        with pytest.raises(StageContractError, match=rf"^stage train {re.escape(message)}"):
            run_stages(tmp_path, {"train": Step(run, produces=("path",))}, ["train"])
        assert not stage_marker(tmp_path, "train").exists()  # so a rerun does the stage again
    (tmp_path / "model").mkdir()
    made = {"train": Step(lambda done: {"path": str(tmp_path / "model")}, produces=("path",))}
    assert run_stages(tmp_path, made, ["train"])["train"]["path"] == str(tmp_path / "model")
    skipped = {"train": Step(lambda done: {SKIPPED_KEY: "nothing to make"}, produces=("path",))}
    assert run_stages(tmp_path / "skipped", skipped, ["train"])["train"][SKIPPED_KEY] == "nothing to make"


def test_reading_an_artifact_its_stage_does_not_produce_fails_naming_both(tmp_path) -> None:
    from steerable.pipeline import StageContractError, Step, run_stages, stage_marker

    (tmp_path / "model").mkdir()
    train = Step(lambda done: {"path": str(tmp_path / "model"), "report": "r.md"}, produces=("path",))

    def reading(key: str) -> Step:
        return Step(lambda done: {"read": str(done.artifact("train", key))}, requires=("train",))

    with pytest.raises(
        StageContractError,
        match=r"^stage eval reads stage train's report, which train does not declare in produces= "
        r"\(it declares \['path'\]\)$",
    ):
        run_stages(tmp_path, {"train": train, "eval": reading("report")}, ["eval"])
    assert not stage_marker(tmp_path, "train").exists()  # refused before train ran for it
    results = run_stages(tmp_path, {"train": train, "eval": reading("path")}, ["eval"])
    assert results["eval"]["read"] == str((tmp_path / "model").resolve())


def test_a_missing_prerequisite_is_one_line_naming_the_stage_and_what_it_needs(tmp_path) -> None:
    from steerable.pipeline import StageResults, Step, run_stages
    from steerable.run_dir import RunDirError

    orphan = {"eval": Step(lambda done: done.require("train"), requires=("train",))}
    with pytest.raises(
        RunDirError, match=r"^stage eval needs train, which is not a stage of this run's method"
    ):
        run_stages(tmp_path, orphan, ["eval"])
    with pytest.raises(
        RunDirError, match=r"has not finished its train stage \(stages/train.json is missing\)$"
    ):
        StageResults.finished(tmp_path, ["train"]).require("train")


def test_a_folder_from_before_the_eval_rename_is_one_line_not_a_rerun(tmp_path) -> None:
    from steerable.pipeline import run_stages
    from steerable.run_dir import RunDirError

    run_stages(tmp_path, contract_steps(), ["train"])
    (tmp_path / "stages" / "report.json").write_text("{}")
    with pytest.raises(
        RunDirError, match=r"before the report stage was renamed eval: rename stages/report.json"
    ):
        run_stages(tmp_path, contract_steps(), ["train", "eval"])
    assert not (tmp_path / "stages" / "eval.json").exists()


# ------------------------------------------------------------------------------------------ one package layout

METHODS = ROOT / "methods"
# docs/design.md, "One file layout for a method package": every method package holds only these files ...
LAYOUT = {"__init__", "config", "stages", "module", "policy", "evaluate", "loss", "data", "rewards", "pairs"}
# ... plus the domain modules named here, each one concept of its method that the layout has no slot for.
DOMAIN = {
    "clp": {"conditioning"},
    "pcm": {"controller", "preferences"},
    "reward_models": {"train"},  # the recipe SteerLM's apm stage reuses
    "ric": {"scores"},
    "steerlm": {"attributes", "annotator", "dials", "io", "sampling"},
}
# Stage functions that several methods share live beside the packages, not in one of them.
SHARED_STAGES = {"steerable.methods.warm_start"}
# A method may build on another method's public modules only along these documented edges.
BUILDS_ON = {("modpo", "dpo"), ("steerlm", "reward_models")}
LIGHTNING_BASES = {"LightningModule"}


def method_packages() -> list[Path]:
    return sorted(p for p in METHODS.iterdir() if (p / "__init__.py").is_file())


def spec_package(spec: Any) -> str:
    return spec.config.__module__.rpartition(".")[0]


def test_every_method_package_follows_the_layout() -> None:
    strays = [
        f"{package.name}/{path.name}"
        for package in method_packages()
        for path in package.glob("*.py")
        if path.stem not in LAYOUT | DOMAIN.get(package.name, set())
    ]
    assert not strays, f"not a layout file (docs/design.md lists them): {strays}"
    assert not [p for p in METHODS.glob("*/*/*.py")], "method packages are flat"


def test_stage_functions_live_in_stages_and_evaluations_in_evaluate() -> None:
    wrong = []
    for spec in specs().values():
        home = spec_package(spec)
        for stage in spec.stages:
            module = stage.run.partition(":")[0]
            if module not in {f"{home}.stages", *SHARED_STAGES}:
                wrong.append(f"{spec.name}.{stage.name}: {stage.run}")
        if spec.evaluation is not None and not spec.evaluation.run.startswith(f"{home}.evaluate:"):
            wrong.append(f"{spec.name} eval={spec.evaluation.kind}: {spec.evaluation.run}")
        if spec.policy and not spec.policy.startswith((f"{home}.policy:", "steerable.policies.")):
            wrong.append(f"{spec.name} policy: {spec.policy}")
    assert not wrong, wrong


def lightning_classes() -> dict[str, Path]:
    """Every class in steerable/ that subclasses a LightningModule, directly or through another such class
    (read from the source by base name)."""
    classes = [
        (node, path)
        for path in modules().values()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
    ]
    found: dict[str, Path] = {}
    grew = True
    while grew:
        grew = False
        for node, path in classes:
            bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
            if node.name not in found and bases & (LIGHTNING_BASES | set(found)):
                found[node.name] = path
                grew = True
    return found


def test_lightning_modules_live_in_module_py_or_the_training_package() -> None:
    found = lightning_classes()
    assert {"CausalLMModule", "SuperHFModule", "PCMModule", "SteerLM2Module", "DPOModule"} <= set(found)
    misplaced = [
        f"{name}: {path.relative_to(ROOT.parent)}"
        for name, path in found.items()
        if not (path.parent.parent == METHODS and path.name == "module.py")
        and (ROOT / "training") not in path.parents
    ]
    assert not misplaced, misplaced


def test_methods_import_other_methods_only_along_documented_edges() -> None:
    """No method imports the SFT package (its recipe is methods/sft_recipe.py); MODPO builds on DPO and SteerLM
    on the attribute model, as docs/design.md says."""
    names = {p.name for p in method_packages()}
    edges = set()
    for name, path in modules().items():
        parts = name.split(".")
        if parts[:2] != ["steerable", "methods"] or len(parts) < 3 or parts[2] not in names:
            continue
        for target in imported(path, name):
            other = target.split(".")[2] if target.count(".") >= 2 else ""
            if target.startswith("steerable.methods.") and other in names and other != parts[2]:
                edges.add((parts[2], other, f"{name} -> {target}"))
    undocumented = sorted(e[2] for e in edges if e[:2] not in BUILDS_ON)
    assert not undocumented, undocumented
