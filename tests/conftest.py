"""Shared fixtures: compose the real configs with CPU/tiny overrides; locate the optional shared data."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from steerable.cli.common import CONF_DIR, setup_hydra
from steerable.run_dir import COMPLETE_MARKER

MAX_WORKERS = 4  # each worker holds torch + transformers (~0.5 GB) and its own session fixtures


def usable_cores() -> int:
    """Cores this process may run on (its affinity where the OS reports one, e.g. not on macOS)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto` (pyproject's addopts): one worker per usable core, at most MAX_WORKERS."""
    return max(1, min(MAX_WORKERS, usable_cores()))


def share_cores_among_workers() -> None:
    """Under xdist each worker (and the CLIs it starts, through OMP_NUM_THREADS) gets its share of the cores:
    with more torch threads than free cores every step gets several times slower."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, usable_cores() // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)


share_cores_among_workers()
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# what the CLIs run with in tests (tests/test_cli.py's subprocesses, run_cli in process)
CLI_ENV = {"WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "HYDRA_FULL_ERROR": "1"}
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_file(relative: str) -> Path:
    """A file under ../shared/data, or skip the test with the reason when it is absent."""
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"shared data not available: {path} (only on the developers' machines)")
    return path


def compose_config(config_name: str = "train", overrides: list[str] | None = None) -> DictConfig:
    setup_hydra()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides or [])


TINY_RUN = [
    "model=tiny",
    "data=demo",
    "hardware=cpu",
    "logger=csv",
    "data.max_records=48",
    "report.num_samples=2",
    "report.sampling.max_new_tokens=8",
]


@pytest.fixture
def tiny_train_cfg():
    """A composed, validated tiny SFT config whose outputs go to a temporary folder."""

    def make(tmp_path: Path, *extra: str):
        from steerable.cli.common import validate

        return validate(compose_config("train", [*TINY_RUN, f"output_root={tmp_path}", *extra]))

    return make


# ------------------------------------------------------------------------------------------ tiny runs


def save_run_config(run_dir: Path, composed: DictConfig, overrides: Sequence[str] | None = None) -> None:
    """What `steerable-train` writes into a run folder before it runs: `.hydra/config.yaml` (loading a run
    reads it) and, given the command line, `.hydra/overrides.yaml` (the leaderboard prints it)."""
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(composed, hydra_dir / "config.yaml")
    if overrides is not None:
        OmegaConf.save(OmegaConf.create(list(overrides)), hydra_dir / "overrides.yaml")


def run_composed(run_dir: Path, composed: DictConfig, overrides: Sequence[str] | None = None, callbacks=None):
    """A composed train config run in this process as the CLI runs it, into `run_dir`; the stages' results."""
    from steerable.cli.common import validate
    from steerable.cli.train import run

    save_run_config(run_dir, composed, overrides)
    return run(validate(composed), run_dir, callbacks)


def train_in(run_dir: Path, *overrides: str, callbacks=None) -> dict:
    """`steerable-train *overrides`, in this process, into `run_dir` (made here); the stages' results.
    For tests that check training itself or change the run afterwards; a test that only reads a finished
    run takes `trained_run` instead, which trains each configuration once."""
    return run_composed(run_dir, compose_config("train", list(overrides)), overrides, callbacks)


def run_results(run_dir: Path) -> dict:
    """What `run` returned for a finished run, read back from its completion marker (JSON: tuples come back
    as lists, other non-JSON values as strings)."""
    summary = json.loads((run_dir / COMPLETE_MARKER).read_text())
    summary.pop("hardware")  # mark_complete adds the hardware choice beside the stages' results
    return summary


def trained_runs_root(tmp_path_factory) -> Path:
    """Where finished runs are kept for the session: under xdist the folder above the worker's own temporary
    folder, which every worker of this session shares (and no other session does); else the session's."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "trained_runs"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Callable[..., Path]:
    """`trained_run(*overrides) -> Path`: the folder of a finished `steerable-train *overrides` run (as
    `train_in` makes it), trained once per test session and shared by every test that asks for the same
    overrides, in the same order, including tests on other xdist workers.

    The folder is READ-ONLY for callers: a test that writes into a run (eval output, a resume, changed
    files) copies it first, e.g. `shutil.copytree(trained_run(...), tmp_path / "run")`. Overrides must not
    name a per-test path (`output_root=tmp_path`), or nothing is shared. A reused run equals a fresh one:
    `run` seeds everything from the config's `seed`.

    Each configuration has a slot named by a hash of its overrides, guarded by a file lock: the first
    worker to ask trains it in place, then writes `done`; others wait on the lock and reuse it. A slot
    without `done` (its worker died while training, or training failed) is cleared and trained again.
    The run is trained where it stays (no rename into place) because a run folder may record absolute
    paths of its own (a warm start's adapter, a policy's experts)."""
    from filelock import FileLock

    root = trained_runs_root(tmp_path_factory)

    def make(*overrides: str) -> Path:
        key = hashlib.sha256("\n".join(overrides).encode()).hexdigest()[:16]
        slot, done = root / key, root / key / "done"
        with FileLock(str(root / f"{key}.lock")):
            if not done.is_file():
                shutil.rmtree(slot, ignore_errors=True)
                train_in(slot / "run", *overrides)
                done.write_text("\n".join(overrides) + "\n")
        return slot / "run"

    return make


@pytest.fixture(scope="session")
def steerlm_run(trained_run) -> Path:
    """One tiny SteerLM run (human labels, conditioned SFT only) shared by the serving and export tests;
    they only read it."""
    from tests.test_steerlm import STEERLM_HUMAN

    return trained_run(*STEERLM_HUMAN)


@pytest.fixture(scope="session")
def clp_run(trained_run) -> Path:
    """One tiny CLP run (attention variant: adapters mixed per weighting) for export and serving tests."""
    from tests.test_clp import CLP

    return trained_run(*CLP, "method=clp", "method.variant=attn", "method.stages=[calibrate,train]")


def restore_handlers(handlers: list[logging.Handler]) -> None:
    """The root logger as before a CLI ran in this process (Hydra configures it for each job)."""
    for handler in logging.root.handlers[:]:
        if handler not in handlers:
            logging.root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in logging.root.handlers:
            logging.root.addHandler(handler)


def run_cli(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`steerable-<script> args` run in this process as `tests.test_cli.cli` runs it in a new one (same
    environment, exit status, stdout and stderr): for tests of what a CLI does, not of its process. The
    root logger, the working directory and sys.argv are restored afterwards."""
    import contextlib
    import importlib
    import io
    import traceback

    from hydra.core.global_hydra import GlobalHydra

    out, err, code = io.StringIO(), io.StringIO(), 0
    saved_argv, saved_cwd, saved_handlers = sys.argv, Path.cwd(), logging.root.handlers[:]
    saved_env = {k: os.environ.get(k) for k in CLI_ENV}
    os.environ.update(CLI_ENV)
    os.chdir(cwd)
    sys.argv = [f"steerable-{script}", *args]
    GlobalHydra.instance().clear()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            importlib.import_module(f"steerable.cli.{script}").main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except Exception:  # HYDRA_FULL_ERROR=1 lets a failure through, as it ends a process with a traceback
        code = 1
        err.write(traceback.format_exc())
    finally:
        GlobalHydra.instance().clear()
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        restore_handlers(saved_handlers)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return subprocess.CompletedProcess(sys.argv, code, out.getvalue(), err.getvalue())
