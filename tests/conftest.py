"""Shared fixtures: compose the real configs with CPU/tiny overrides; locate the optional shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from steerable.cli.common import CONF_DIR, setup_hydra

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
    "report.max_new_tokens=8",
]


@pytest.fixture
def tiny_train_cfg():
    """A composed, validated tiny SFT config whose outputs go to a temporary folder."""

    def make(tmp_path: Path, *extra: str):
        from steerable.cli.common import validate

        return validate(compose_config("train", [*TINY_RUN, f"output_root={tmp_path}", *extra]))

    return make


@pytest.fixture(scope="session")
def steerlm_run(tmp_path_factory) -> Path:
    """One tiny SteerLM run (human labels, conditioned SFT only) shared by the serving and export tests;
    they only read it."""
    from tests.test_steerlm import run_as_cli

    run_dir = tmp_path_factory.mktemp("steerlm") / "run"
    run_as_cli(run_dir, "method.labels=human", "method.stages=[acsft]")
    return run_dir


@pytest.fixture(scope="session")
def clp_run(tmp_path_factory) -> Path:
    """One tiny CLP run (attention variant: adapters mixed per weighting) for export and serving tests."""
    from tests.test_clp import run_as_cli

    run_dir = tmp_path_factory.mktemp("clp") / "run"
    run_as_cli(run_dir, "method=clp", "method.variant=attn", "method.stages=[calibrate,train]")
    return run_dir
