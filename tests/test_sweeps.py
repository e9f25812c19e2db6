"""Sweeps and launchers as a user runs them: an Optuna study (and its resume), a submitit_local multirun,
the SLURM hardware profile, and a run without an objective failing its trial with a reason."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from steerable.cli.callbacks import NanObjectiveFails
from steerable.cli.common import CONF_DIR, validate
from steerable.run_dir import is_complete
from tests.conftest import compose_config

pytestmark = pytest.mark.sweeps

ENV = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "HYDRA_FULL_ERROR": "1"}
# Two training steps and no eval stage: the sweep machinery is under test, not the method.
TINY = ["method=sft", "model=tiny", "data=demo", "debug=fast", "method.stages=[train]"]
TINY += ["hardware.torch_threads=1"]  # submitit_local runs its jobs at once on a 2-core machine


def train_multirun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "steerable.cli.train", "-m", *TINY, *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )


def run_folders(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_optuna_study_runs_trials_and_resumes_in_its_sweep_folder(tmp_path) -> None:
    import optuna

    result = train_multirun(
        "hparams_search=optuna", "hydra.sweeper.n_trials=2", f"output_root={tmp_path}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = list((tmp_path / "sft").iterdir())
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert math.isfinite(best.best_value)
    assert set(best.best_params) == {"method.lr", "model.lora.r", "method.weight_decay"}
    assert (sweep / "optuna.db").is_file()
    assert len(run_folders(sweep)) == 2 and all(is_complete(p) for p in run_folders(sweep))

    # Resume: same folder, another sampler seed; the third trial gets a folder of its own.
    result = train_multirun(
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.sampler.seed=2",
        f"hydra.sweep.dir={sweep}",
        f"output_root={tmp_path}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="sft", storage=f"sqlite:///{sweep}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert len({t.params["method.lr"] for t in study.trials}) == 3
    assert len(run_folders(sweep)) == 3 and all(is_complete(p) for p in run_folders(sweep))


def test_submitit_local_runs_two_jobs(tmp_path) -> None:
    result = train_multirun(
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "method.lr=1e-4,3e-4",
        f"output_root={tmp_path}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = list((tmp_path / "sft").iterdir())
    jobs = run_folders(sweep)
    assert [p.name for p in jobs] == ["0", "1"]
    for job in jobs:
        assert is_complete(job), job
        assert (job / "checkpoints" / "final" / "adapter_model.safetensors").is_file(), job
    assert [OmegaConf.load(j / ".hydra" / "config.yaml").method.lr for j in jobs] == [1e-4, 3e-4]
    assert len(list((sweep / ".submitit").glob("*/*_0_log.out"))) == 2


def test_slurm_profile_runs_one_task_per_gpu() -> None:
    overrides = ["hardware=slurm", "model=tiny", "hardware.devices=8", "hardware.num_nodes=2"]
    hardware = validate(compose_config("train", overrides)).hardware
    assert (hardware.strategy.value, hardware.accelerator.value) == ("ddp", "gpu")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        launcher = compose("train", overrides, return_hydra_config=True).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (8, 8, 2)


def test_a_run_without_objective_fails_its_trial_with_the_reason() -> None:
    config = OmegaConf.create({"method": {"stages": ["eval"]}})
    config.hydra = {"runtime": {"output_dir": "/x/0"}}
    job = JobReturn(status=JobStatus.COMPLETED, _return_value=float("nan"))
    NanObjectiveFails().on_job_end(config=config, job_return=job)
    assert job.status == JobStatus.FAILED
    with pytest.raises(ValueError, match=r"/x/0 returned no objective.*\['eval'\].*val_loss"):
        job.return_value  # noqa: B018 - the property raises for a failed job

    finished = JobReturn(status=JobStatus.COMPLETED, _return_value=1.5)
    NanObjectiveFails().on_job_end(config=config, job_return=finished)
    assert finished.status == JobStatus.COMPLETED and finished.return_value == 1.5
