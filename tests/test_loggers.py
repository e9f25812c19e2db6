"""Loggers: W&B offline writes under the run folder and reuses its run id on resume; TensorBoard writes events."""

from __future__ import annotations

import time
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
    time.sleep(1.1)  # W&B names an offline run's folder by the second it starts: two in one second share one
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


def test_reports_land_on_wandb_tables_figures_and_headline_numbers(
    tmp_path, tiny_train_cfg, monkeypatch
) -> None:
    """A run with logger=wandb: the report's tables and figures are in the offline run (read back from its
    files), and the report's numbers in its summary."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import wandb

    from steerable.report import Report

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = new_run_dir(tmp_path)
    overrides = [
        "logger=wandb_offline",
        "trainer.max_steps=2",
        "report.num_samples=2",
        "report.sampling.max_new_tokens=4",
    ]
    run(tiny_train_cfg(tmp_path, *overrides), run_dir)  # SFT writes report.md: setup and sample tables
    run_id = (run_dir / WANDB_ID_FILE).read_text().strip()
    (files,) = [p / "files" for p in (run_dir / "wandb").glob(f"offline-run-*-{run_id}")]
    tables = list((files / "media" / "table").rglob("*.table.json"))
    assert tables, list(files.rglob("*"))
    samples = [json.loads(t.read_text()) for t in tables if "Sample" in str(t)]
    assert samples and samples[0]["columns"] == ["prompt", "before training", "after training"]
    assert len(samples[0]["data"]) == 2

    wandb.init(mode="offline", dir=str(tmp_path), project="steerable-test")
    figure = tmp_path / "dial_verbosity.png"
    plt.plot([0, 1], [0, 1])
    plt.savefig(figure)
    report = Report("a report")
    report.section("Dials").key_values({"spearman": 0.7, "folder": "x"})
    report.image(figure, tmp_path, "verbosity dial")
    report.write(tmp_path / "report.md")
    files = Path(wandb.run.dir)
    wandb.finish()
    assert list((files / "media" / "images").rglob("dial_verbosity*.png"))
    # an offline run keeps its summary only in its record log (wandb 0.31 has no Python reader for it):
    # the summary key and its value are stored as plain protobuf strings there
    (log,) = files.parent.glob("run-*.wandb")
    records = log.read_bytes()
    assert b"report/Dials/spearman" in records and b"0.7" in records
    assert b"report/Dials/folder" not in records  # text is a table cell, not a headline number
