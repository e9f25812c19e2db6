"""Every script in benchmarks/ runs at its `--smoke` size and prints its table, so a benchmark cannot rot
unnoticed (sft_throughput.py once stopped running for weeks). A new script is picked up by the glob; one without
`--smoke` fails here (argparse rejects the flag).

The scripts are mostly interpreter start-up and imports, so a module fixture starts them two at a time in
subprocesses, and each test waits for its own. A script that would train a run first is given the session's
shared tiny run of the same kind instead (RUN_GIVEN), and a test checks that the run it would train composes."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(path.name for path in (REPO / "benchmarks").glob("*.py"))
SLOWEST = ("sft_throughput.py", "gpu_check.py")  # started first: three processes / a steerable-train launch
# Scripts that train a tiny run unless given one with `--run`: given the session's shared run of that kind.
RUN_GIVEN = {"serve_latency.py": "steerlm_run", "serve_load.py": "steerlm_run"}
TABLE_RULE = re.compile(r"^\|(-+\|)+$", re.MULTILINE)  # the |---|---| line under a markdown table's header


def run_smoke(script: str, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(REPO / "benchmarks" / script), "--smoke", *extra]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def selected_scripts(session: pytest.Session) -> set[str]:
    """The scripts this session's selected tests read (all of them unless `-k` or a node id narrows it)."""
    here = [item for item in session.items if item.module is not None and item.module.__name__ == __name__]
    wanted = {item.callspec.params["script"] for item in here if hasattr(item, "callspec")}
    if any(item.name == "test_sft_throughput_first_step_losses_match_trl" for item in here):
        wanted.add("sft_throughput.py")
    return wanted


@pytest.fixture(scope="module")
def smoke_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future]]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "TMPDIR": str(tmp_path_factory.mktemp("benchmarks")),  # gpu_check --smoke writes its run folders here
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        order = sorted(selected_scripts(request.session), key=lambda script: script not in SLOWEST)
        runs = {s: ["--run", str(request.getfixturevalue(RUN_GIVEN[s]))] for s in order if s in RUN_GIVEN}
        yield {script: pool.submit(run_smoke, script, env, *runs.get(script, [])) for script in order}


def test_the_benchmarks_folder_has_scripts() -> None:
    assert "sft_throughput.py" in SCRIPTS and "gpu_check.py" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_runs_at_smoke_size_and_prints_its_table(
    script: str, smoke_runs: dict[str, Future]
) -> None:
    result = smoke_runs[script].result()
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"`python benchmarks/{script} --smoke` exited {result.returncode} (every benchmark needs a --smoke "
        f"size that runs in seconds):\n{output[-4000:]}"
    )
    assert TABLE_RULE.search(result.stdout), (
        f"benchmarks/{script} --smoke printed no table:\n{output[-4000:]}"
    )


@pytest.mark.parametrize("script", sorted(RUN_GIVEN))
def test_a_script_given_a_run_would_train_a_valid_one(script: str) -> None:
    """The run a script trains when not given one (its smoke run above is given one) composes and validates:
    the same kind of run as the one it is given (SteerLM, human labels, conditioned SFT only)."""
    from steerable.cli.common import validate
    from tests.conftest import compose_config

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        module = importlib.import_module(script.removesuffix(".py"))
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    cfg = validate(compose_config("train", [*module.TRAIN, *getattr(module, "MID_SHAPE", [])]))
    assert (cfg.method.name, cfg.method.labels, list(cfg.method.stages)) == ("steerlm", "human", ["acsft"])
    assert cfg.model.name == "tiny"


def test_sft_throughput_first_step_losses_match_trl(smoke_runs: dict[str, Future]) -> None:
    """Both arms train the base model on the same first batch: equal mean losses, or the script says why not."""
    stdout = smoke_runs["sft_throughput.py"].result().stdout
    if "TRL arm skipped" in stdout:
        pytest.skip(stdout.split("TRL arm skipped: ")[1].splitlines()[0])
    assert "TRL input ids + labels identical to ours: True" in stdout
    assert re.search(r"first-step mean loss: .*: match$", stdout, re.MULTILINE), stdout[-3000:]
