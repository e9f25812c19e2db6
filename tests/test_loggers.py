"""Loggers: W&B offline writes under the run folder and reuses its run id on resume; TensorBoard writes events."""

from __future__ import annotations

from pathlib import Path

from steerable.cli.train import run
from steerable.run_dir import WANDB_ID_FILE


def new_run_dir(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    return run_dir


def test_wandb_offline_logs_into_the_run_folder_and_keeps_its_id(
    tmp_path, tiny_train_cfg, monkeypatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = new_run_dir(tmp_path)
    overrides = ["logger=wandb_offline", "trainer.max_steps=2", "method.stages=[train]"]
    run(tiny_train_cfg(tmp_path, *overrides), run_dir)
    run_id = (run_dir / WANDB_ID_FILE).read_text().strip()
    offline_runs = list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert offline_runs, list((run_dir / "wandb").iterdir())
    assert (run_dir / "metrics.csv").is_file()  # CSV alongside W&B
    (run_dir / "stages" / "train.json").unlink()  # force the stage to run again, as after a crash
    run(tiny_train_cfg(tmp_path, *overrides, f"resume={run_dir}"), run_dir)
    assert (run_dir / WANDB_ID_FILE).read_text().strip() == run_id
    assert len(list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))) == 2  # same id, resumed


def test_tensorboard_writes_events(tmp_path, tiny_train_cfg) -> None:
    run_dir = new_run_dir(tmp_path)
    run(
        tiny_train_cfg(tmp_path, "logger=tensorboard", "trainer.max_steps=2", "method.stages=[train]"),
        run_dir,
    )
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
