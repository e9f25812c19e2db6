"""The console scripts as a user runs them: single run, multirun, generate, resume=auto folder choice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from steerable.methods.registry import specs
from steerable.run_dir import latest_unfinished, mark_complete, resolve_run_dir

ENV = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "HYDRA_FULL_ERROR": "1"}
TINY = ["model=tiny", "data=demo", "hardware=cpu", "data.max_records=24", "report.sampling.max_new_tokens=4"]


def cli(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    code = f"import sys; from steerable.cli.{script} import main; sys.argv[0] = 'steerable-{script}'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300
    )


def test_train_cli_writes_the_run_folder(tmp_path) -> None:
    result = cli("train", *TINY, "trainer.max_steps=2", "logger=csv", f"output_root={tmp_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = list((tmp_path / "sft").iterdir())
    for name in (
        ".hydra/config.yaml",
        "metrics.csv",
        "report.md",
        "checkpoints/last.ckpt",
        "checkpoints/final/adapter_model.safetensors",
    ):
        assert (run_dir / name).is_file(), name


def test_multirun_sweeps_the_grid(tmp_path) -> None:
    result = cli(
        "train",
        "-m",
        *TINY,
        "trainer.max_steps=1",
        "method.lr=1e-4,3e-4",
        "method.stages=[train]",
        f"output_root={tmp_path}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (sweep,) = list((tmp_path / "sft").iterdir())
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    lrs = [OmegaConf.load(j / ".hydra" / "config.yaml").method.lr for j in jobs]
    assert lrs == [1e-4, 3e-4]
    assert all((j / "stages" / "train.json").is_file() for j in jobs)


def test_bad_override_fails_before_work_naming_the_key(tmp_path) -> None:
    result = cli("train", *TINY, "method.lrr=1", f"output_root={tmp_path}", cwd=tmp_path)
    assert result.returncode != 0 and "method.lrr" in result.stderr
    assert not (tmp_path / "sft").exists() or not list((tmp_path / "sft").glob("*/checkpoints"))


def test_generate_cli_prints_a_completion(tmp_path) -> None:
    result = cli(
        "generate",
        "model=tiny",
        "prompt=hello",
        "sampling.max_new_tokens=5",
        "sampling.do_sample=true",
        "num_return_sequences=2",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--- sample 1" in result.stdout and "--- sample 2" in result.stdout


def test_help_lists_groups_and_options(tmp_path) -> None:
    result = cli("train", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for line in (
        "method: " + ", ".join(sorted(specs())),  # every method package, none named here
        "model: hf, smollm2-135m, tiny",
        "hardware: cpu, ddp, deepspeed, fsdp, gpu",
        "logger: csv, none, tensorboard, wandb, wandb_offline",
    ):
        assert line in result.stdout


def test_resume_auto_picks_newest_unfinished_run(tmp_path) -> None:
    for name in ("2026-01-01_00-00-00", "2026-01-02_00-00-00", "2026-01-03_00-00-00"):
        (tmp_path / "sft" / name / ".hydra").mkdir(parents=True)
        (tmp_path / "sft" / name / "checkpoints").mkdir()
    mark_complete(tmp_path / "sft" / "2026-01-03_00-00-00", {})
    (tmp_path / "sft" / "2026-01-04_00-00-00" / ".hydra").mkdir(parents=True)  # failed before any work
    assert latest_unfinished(tmp_path, "sft").name == "2026-01-02_00-00-00"
    assert resolve_run_dir(str(tmp_path), "sft", "auto").endswith("2026-01-02_00-00-00")
    fresh = Path(resolve_run_dir(str(tmp_path), "sft", None))
    assert (
        fresh.parent == tmp_path / "sft" and fresh.is_dir() and not any(fresh.iterdir())
    )  # made, exclusively
    assert Path(resolve_run_dir(str(tmp_path), "other", "auto")).parent == tmp_path / "other"
