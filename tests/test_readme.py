"""Every command in README.md and docs/*.md runs as written: each fenced `steerable-*`, `make` and `curl` line is
run here on tiny models at debug=fast, in-process (as tests/test_cli.py's CLIs, without a new interpreter each).

A run folder in a command is written `outputs/<task>/<timestamp>` (or `outputs/<task>/multirun-<timestamp>`); it
is filled with the folder that the first training command of that task in the same documents wrote, so a line
that needs a run depends on the line that makes it, as for a reader. Other placeholders come from PLACEHOLDERS;
an unknown one fails, naming the file and line. New lines are picked up without changes here.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import re
import shlex
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pytest
from omegaconf import OmegaConf

from tests.conftest import SHARED_DATA, restore_handlers
from tests.test_quiet_output import foreign_noise

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PROGRAMS = ("steerable-", "make", "curl")
RUN_FOLDER = re.compile(r"outputs/([\w.-]+)/(multirun-)?<timestamp>")


@dataclass(frozen=True)
class Command:
    file: str
    line: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def words(self) -> list[str]:
        return shlex.split(self.text, comments=True)

    @property
    def program(self) -> str:
        return self.words[0]


def extract_commands(path: Path) -> list[Command]:
    """The command lines of the fenced blocks of a Markdown file (continuation lines joined)."""
    commands, fenced, pending, start = [], False, "", 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            continue
        if not pending:
            start = number
        pending += line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending.startswith(PROGRAMS):
            commands.append(Command(str(path.relative_to(REPO)), start, pending))
        pending = ""
    return commands


ALL_COMMANDS = [c for path in DOCUMENTS for c in extract_commands(path)]
# Documents whose lines run in another test file, beside the fixture they share: docs/benchmark.md trains the
# demo suite, which tests/test_benchmark.py needs anyway (one multirun instead of two).
RUN_ELSEWHERE = {"docs/benchmark.md": "tests/test_benchmark.py"}
HERE = [c for c in ALL_COMMANDS if c.file not in RUN_ELSEWHERE]


def commands_of(file: str) -> list[Command]:
    return [c for c in ALL_COMMANDS if c.file == file]


# ------------------------------------------------------------------------------------------ what a line needs

# Lines that cannot run on this machine: (what the line has, why it is skipped).
SKIPS: list[tuple[Callable[[Command], bool], str]] = [
    (lambda c: "hardware=slurm" in c.text, "needs a SLURM cluster (submitit_slurm launcher)"),
    (
        lambda c: "generation.engine=vllm" in c.text and importlib.util.find_spec("vllm") is None,
        "vLLM is not installed (optional extra, docs/engines.md)",
    ),
]

# Placeholders other than run folders: literal -> a function of the session that returns the text to put there.
PLACEHOLDERS: dict[str, Callable[[ReadmeSession], str]] = {}


def skip_reason(command: Command) -> str | None:
    for applies, reason in SKIPS:
        if applies(command):
            return reason
    for word in command.words:
        if "../shared/data/" in word:
            relative = word.split("../shared/data/", 1)[1]
            if not (SHARED_DATA / relative).exists():
                return f"shared data not available: {SHARED_DATA / relative}"
    return None


def check_written_out(command: Command) -> None:
    """No bare `...` and no placeholder but a run folder or one of PLACEHOLDERS: every value a reader must type
    is written out or named."""
    text = RUN_FOLDER.sub("", command.text)
    for literal in PLACEHOLDERS:
        text = text.replace(literal, "")
    if unknown := re.findall(r"<[^<>]*>", text):
        pytest.fail(
            f"{command.where}: unknown placeholder {unknown[0]}; write a run folder as "
            "outputs/<task>/<timestamp> or add the placeholder to PLACEHOLDERS in tests/test_readme.py"
        )
    bare = [w for w in command.words if w == "..." or w.endswith("=...") or w.endswith("/...")]
    if bare:
        pytest.fail(f"{command.where}: {bare} is not a value a reader can type; write it out: {command.text}")


def task_of(words: list[str]) -> str:
    """The `outputs/<task>` folder a training command writes to."""
    given = {w.split("=", 1)[0]: w.split("=", 1)[1] for w in words if "=" in w}
    if "task_name" in given:
        return given["task_name"]
    if "experiment" in given:
        experiment = OmegaConf.load(REPO / "experiments" / f"{given['experiment']}.yaml")
        return str(experiment.get("task_name", given["experiment"]))
    return given.get("method", "sft")


def producer_of(command: Command, task: str, multirun: bool) -> Command:
    """The first training command (of the same file, then of any) that writes `outputs/<task>/...`."""
    in_order = sorted(ALL_COMMANDS, key=lambda c: (c.file != command.file, ALL_COMMANDS.index(c)))
    for candidate in in_order:
        words = candidate.words
        if candidate.program == "steerable-train" and ("-m" in words) == multirun and task_of(words) == task:
            return candidate
    kind = "sweep (-m)" if multirun else "run"
    pytest.fail(
        f"{command.where}: no command in README.md or docs/ trains a {kind} of task {task} to fill "
        f"outputs/{task}/{'multirun-' if multirun else ''}<timestamp>; add one, or a filler to PLACEHOLDERS "
        "in tests/test_readme.py"
    )


# ------------------------------------------------------------------------------------------ tiny and fast

# Per program: keys set to the test's values (a value of None drops the key), and keys added when absent.
SHRINK: dict[str, tuple[dict[str, str | None], dict[str, str]]] = {
    "steerable-train": (
        {"model": "tiny", "trainer.max_steps": None, "trainer.val_check_interval": None},
        {"model": "tiny", "debug": "fast"},
    ),
    "steerable-generate": (
        {"model": "tiny", "sampling.max_new_tokens": "4"},
        {"sampling.max_new_tokens": "4"},
    ),
    "steerable-eval": ({}, {"debug": "fast"}),
    "steerable-serve": ({"port": "0"}, {"port": "0"}),
    "steerable-export": ({}, {}),
}


def shrunk(program: str, words: list[str]) -> list[str]:
    replace, add = SHRINK[program]
    if "--help" in words or "-h" in words:
        return words
    out = []
    for word in words:
        key = word.split("=", 1)[0] if "=" in word else None
        if key in replace:
            if replace[key] is not None:
                out.append(f"{key}={replace[key]}")
            continue
        out.append(word)
    given = {w.split("=", 1)[0] for w in out if "=" in w}
    return out + [f"{k}={v}" for k, v in add.items() if k not in given]


# ------------------------------------------------------------------------------------------ running lines


@dataclass
class Outcome:
    code: int
    output: str
    folder: Path | None = None  # the run or sweep folder a training command wrote
    app: object = None  # steerable-serve: the app it would have served
    skipped: str | None = None


@dataclass
class ReadmeSession:
    """Runs commands once each, in a scratch folder that stands for the repository root."""

    root: Path
    outcomes: dict[Command, Outcome] = field(default_factory=dict)
    running: list[Command] = field(default_factory=list)

    def outcome(self, command: Command) -> Outcome:
        if command not in self.outcomes:
            if command in self.running:
                pytest.fail(f"{command.where} needs its own output: {command.text}")
            self.running.append(command)
            try:
                self.outcomes[command] = self.execute(command)
            finally:
                self.running.pop()
        return self.outcomes[command]

    def execute(self, command: Command) -> Outcome:
        if reason := skip_reason(command):
            return Outcome(0, "", skipped=reason)
        check_written_out(command)
        words = [self.filled(command, w) for w in command.words]
        words = [w.replace("../shared/data", str(SHARED_DATA)) for w in words]
        if command.program == "make":
            return self.make(words)
        if command.program == "curl":
            return self.curl(command, words)
        return self.cli(command.program, shrunk(command.program, words[1:]))

    def filled(self, command: Command, word: str) -> str:
        for match in RUN_FOLDER.finditer(word):
            task, multirun = match.group(1), bool(match.group(2))
            made = self.outcome(producer_of(command, task, multirun))
            if made.skipped:
                pytest.skip(f"needs outputs/{task}/<timestamp>, whose command was skipped: {made.skipped}")
            if made.code != 0 or made.folder is None:
                pytest.fail(f"{command.where} needs outputs/{task}/<timestamp>, whose command failed")
            word = word.replace(match.group(0), str(made.folder))
        for literal, fill in PLACEHOLDERS.items():
            word = word.replace(literal, fill(self))
        return word

    def cli(self, program: str, argv: list[str]) -> Outcome:
        before = self.run_folders()
        served: dict = {}

        def capture(server, sockets=None):  # steerable-serve: keep the app, do not block
            served["app"] = server.config.app
            for sock in sockets or []:
                sock.close()

        module = importlib.import_module(f"steerable.cli.{program.removeprefix('steerable-')}")
        buffer, code = io.StringIO(), 0
        saved_argv, saved_cwd, saved_handlers = sys.argv, Path.cwd(), logging.root.handlers[:]
        os.chdir(self.root)
        sys.argv = [program, *argv]
        try:
            with (
                contextlib.redirect_stdout(buffer),
                contextlib.redirect_stderr(buffer),
                mock.patch("uvicorn.Server.run", capture),
            ):
                module.main()
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except Exception:  # HYDRA_FULL_ERROR=1 lets a failure through as an exception
            code = 1
            buffer.write(traceback.format_exc())
        finally:
            sys.argv = saved_argv
            os.chdir(saved_cwd)
            restore_handlers(saved_handlers)
        made = sorted(self.run_folders() - before, key=lambda p: len(p.parts))
        folder = made[0] if made and program == "steerable-train" else None
        return Outcome(code, buffer.getvalue(), folder=folder, app=served.get("app"))

    def run_folders(self) -> set[Path]:
        outputs = self.root / "outputs"
        return {p for p in outputs.glob("*/*") if p.is_dir()} if outputs.is_dir() else set()

    def make(self, words: list[str]) -> Outcome:
        """`make <target>` installs and trains for minutes: the test checks that the target exists and its
        recipe expands (`make -n`)."""
        result = subprocess.run(["make", "-n", *words[1:]], cwd=REPO, capture_output=True, text=True)
        return Outcome(result.returncode, result.stdout + result.stderr)

    def curl(self, command: Command, words: list[str]) -> Outcome:
        """A request to the server the closest `steerable-serve` line above it starts, sent to its app."""
        from fastapi.testclient import TestClient

        serve = [c for c in ALL_COMMANDS if c.file == command.file and c.line < command.line]
        serve = [c for c in serve if c.program == "steerable-serve"]
        if not serve:
            pytest.fail(f"{command.where}: a curl line needs a steerable-serve line above it")
        server = self.outcome(serve[-1])
        if server.code != 0 or server.app is None:
            return Outcome(1, f"the server ({serve[-1].where}) did not start: {server.output[-2000:]}")
        url = next(w for w in words if w.startswith("http"))
        data = words[words.index("-d") + 1] if "-d" in words else None
        method = words[words.index("-X") + 1] if "-X" in words else ("POST" if data else "GET")
        path = "/" + url.split("//", 1)[1].split("/", 1)[1]
        response = TestClient(server.app).request(method, path, content=data)
        return Outcome(0 if response.status_code == 200 else 1, response.text)


def new_session(root: Path) -> ReadmeSession:
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return ReadmeSession(root)  # submitit jobs import steerable from here


def check_command(session: ReadmeSession, command: Command) -> None:
    """The line ran, exited 0 and printed no library noise (or is skipped, saying why)."""
    outcome = session.outcome(command)
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    assert outcome.code == 0, (
        f"{command.where}: {command.text}\nexit {outcome.code}:\n{outcome.output[-3000:]}"
    )
    assert foreign_noise(outcome.output) == [], f"{command.where}: library noise in its output"


@pytest.fixture(scope="session")
def readme_session(tmp_path_factory) -> ReadmeSession:
    return new_session(tmp_path_factory.mktemp("readme"))


def test_the_documents_have_commands() -> None:
    programs = {c.program for c in ALL_COMMANDS}
    assert {"steerable-train", "steerable-generate", "steerable-eval", "steerable-serve"} <= programs
    assert {"steerable-export", "make", "curl"} <= programs


@pytest.mark.parametrize("command", HERE, ids=lambda c: c.where)
def test_command_runs_as_written(readme_session: ReadmeSession, command: Command) -> None:
    check_command(readme_session, command)


def test_documents_run_elsewhere_are_run_there() -> None:
    """Every document is run somewhere: those in RUN_ELSEWHERE by the test file named there."""
    for document, test_file in RUN_ELSEWHERE.items():
        assert commands_of(document), f"{document} has no command lines"
        assert "commands_of(" in (REPO / test_file).read_text() and document in (REPO / test_file).read_text()


def test_a_broken_line_fails(readme_session: ReadmeSession) -> None:
    """The harness itself: a wrong key exits non-zero; an unknown placeholder or a bare `...` fails by name."""
    broken = readme_session.outcome(Command("doc.md", 1, "steerable-train method=sft method.lrr=1"))
    assert broken.code == 2 and "method.lrr" in broken.output
    with pytest.raises(pytest.fail.Exception, match=r"doc.md:2: unknown placeholder <my run>"):
        readme_session.outcome(Command("doc.md", 2, "steerable-eval run=<my run> eval=pareto"))
    with pytest.raises(pytest.fail.Exception, match=r"doc.md:3: .*not a value a reader can type"):
        readme_session.outcome(Command("doc.md", 3, "steerable-train method=sft data.path=..."))
    with pytest.raises(
        pytest.fail.Exception, match=r"no command in README.md or docs/ trains a run of task nope"
    ):
        readme_session.outcome(Command("doc.md", 4, "steerable-eval run=outputs/nope/<timestamp> eval=pcm"))
