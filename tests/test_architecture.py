"""The layering the design promises, checked from the source itself (imports read with `ast`, lazy ones too):
no package-level import cycle, the CLIs and the evaluation library reach no training code, a method lives
in its own package, and no function grows past a screen."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

from steerable.methods.registry import specs

ROOT = Path(__file__).resolve().parents[1] / "steerable"
MAX_FUNCTION_LINES = 60
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
    (MODPO reuses DPO's pairs, loss and module, as SteerLM reuses SFT's recipe)."""
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
    from steerable.methods.pcm.stages import PCMModule
    from steerable.methods.superhf.loop import SuperHFModule
    from steerable.training.online import OnlineModule
    from steerable.training.policy_gradient import PolicyGradientModule

    assert all(issubclass(m, OnlineModule) for m in (SuperHFModule, PCMModule, PolicyGradientModule))
    for path in (ROOT / "methods").rglob("*.py"):
        text = path.read_text()
        assert "trainer_overrides" not in text, path
        # mixture decoding (adapters mixed per example) is HF-only by design: evaluation arms may name it
        if path.parent.name not in ("clp", "pcm") or path.name not in ("evaluate.py",):
            assert "HFSampler(" not in text, path
