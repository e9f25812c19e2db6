"""End-to-end training on the tiny model: loss falls, artifacts land, an interrupted run resumes exactly."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from safetensors.torch import load_file

from steerable.cli.train import run


def train_losses(run_dir: Path) -> list[tuple[int, float]]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [
            (int(r["step"]), float(r["train/loss"])) for r in csv.DictReader(handle) if r.get("train/loss")
        ]


def new_run_dir(tmp_path: Path, name: str) -> Path:
    run_dir = tmp_path / name
    (run_dir / ".hydra").mkdir(parents=True)
    return run_dir


def test_sft_lowers_loss_and_writes_run_folder(tmp_path, tiny_train_cfg) -> None:
    cfg = tiny_train_cfg(
        tmp_path, "trainer.max_steps=20", "method.lr=2e-2", "trainer.checkpoint_every_n_steps=10"
    )
    run_dir = new_run_dir(tmp_path, "run")
    results = run(cfg, run_dir)
    train = results["train"]
    assert train["steps"] == 20
    assert train["val_loss"] < train["val_loss_before"] - 0.3, train
    losses = [loss for _, loss in train_losses(run_dir)]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3
    final = run_dir / "checkpoints" / "final"
    adapter = load_file(final / "adapter_model.safetensors")
    assert adapter and all("lora_" in key for key in adapter)  # adapter only, no base weights
    assert json.loads((final / "steerable.json").read_text())["adapter_only"] is True
    report = (run_dir / "report.md").read_text()
    assert "before training" in report and "held-out loss after" in report
    assert (run_dir / ".steerable" / "complete").is_file()
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["state_dict"] and all("lora_" in k for k in ckpt["state_dict"])


class Crash(RuntimeError):
    pass


class KillAtStep(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise Crash(f"simulated kill at step {self.step}")


def test_killed_run_resumes_to_identical_losses(tmp_path, tiny_train_cfg) -> None:
    # 7 optimizer steps over 5 batches per epoch: the checkpoint at step 3 is mid-epoch, the kill at step 5
    # comes after an epoch boundary, and dropout makes the RNG state matter.
    overrides = [
        "trainer.max_steps=7",
        "trainer.checkpoint_every_n_steps=3",
        "method.lr=1e-2",
        "data.max_records=24",
        "model.lora.dropout=0.1",
        "method.stages=[train]",
    ]
    straight = new_run_dir(tmp_path, "straight")
    run(tiny_train_cfg(tmp_path, *overrides), straight)

    interrupted = new_run_dir(tmp_path, "interrupted")
    with pytest.raises(Crash):
        run(tiny_train_cfg(tmp_path, *overrides), interrupted, callbacks=[KillAtStep(5)])
    assert not (interrupted / "checkpoints" / "final").exists()
    run(tiny_train_cfg(tmp_path, *overrides, f"resume={interrupted}"), interrupted)

    expected, resumed = train_losses(straight), train_losses(interrupted)
    assert [s for s, _ in resumed] == list(range(7))
    assert [s for s, _ in expected] == list(range(7))
    assert [loss for _, loss in resumed] == pytest.approx([loss for _, loss in expected], abs=1e-6)


def test_finished_stages_are_skipped(tmp_path, tiny_train_cfg) -> None:
    run_dir = new_run_dir(tmp_path, "run")
    cfg = tiny_train_cfg(tmp_path, "trainer.max_steps=2", "method.stages=[train]")
    first = run(cfg, run_dir)
    marker = run_dir / "stages" / "train.json"
    stamp = marker.stat().st_mtime_ns
    second = run(tiny_train_cfg(tmp_path, "trainer.max_steps=2", "method.stages=[train,eval]"), run_dir)
    assert marker.stat().st_mtime_ns == stamp and second["train"] == json.loads(json.dumps(first["train"]))
    assert (run_dir / "report.md").is_file()


def test_broken_last_checkpoint_falls_back_and_a_failed_resume_keeps_the_metrics(
    tmp_path, tiny_train_cfg, caplog
) -> None:
    overrides = ["trainer.max_steps=6", "trainer.checkpoint_every_n_steps=3", "method.stages=[train]"]
    straight = new_run_dir(tmp_path, "straight")
    run(tiny_train_cfg(tmp_path, *overrides), straight)
    interrupted = new_run_dir(tmp_path, "interrupted")
    with pytest.raises(Crash):
        run(tiny_train_cfg(tmp_path, *overrides), interrupted, callbacks=[KillAtStep(4)])
    metrics_before = (interrupted / "metrics.csv").read_text()
    last = interrupted / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:100])  # a truncated file, as after a crash mid-write

    with pytest.raises(Crash):  # resumes from step-000003.ckpt, then fails again
        run(
            tiny_train_cfg(tmp_path, *overrides, f"resume={interrupted}"),
            interrupted,
            callbacks=[KillAtStep(4)],
        )
    assert "cannot read the checkpoint" in caplog.text and "resuming from step-000003.ckpt" in caplog.text
    assert (interrupted / "metrics.csv").read_text() == metrics_before  # the failed resume changed nothing

    run(tiny_train_cfg(tmp_path, *overrides, f"resume={interrupted}"), interrupted)
    expected, resumed = train_losses(straight), train_losses(interrupted)
    assert [loss for _, loss in resumed] == pytest.approx([loss for _, loss in expected], abs=1e-6)


def test_a_checkpoint_of_another_model_is_refused_naming_the_file(tmp_path, tiny_train_cfg) -> None:
    from steerable.run_dir import RunDirError

    overrides = ["trainer.max_steps=4", "trainer.checkpoint_every_n_steps=2", "method.stages=[train]"]
    run_dir = new_run_dir(tmp_path, "run")
    with pytest.raises(Crash):
        run(tiny_train_cfg(tmp_path, *overrides), run_dir, callbacks=[KillAtStep(3)])
    with pytest.raises(
        RunDirError, match=r"last.ckpt holds \d+ of the \d+ weights this run trains \(\d+ unknown\)"
    ):
        run(
            tiny_train_cfg(
                tmp_path,
                *overrides,
                "model.lora.r=4",
                "model.lora.target_modules=[q_proj]",
                f"resume={run_dir}",
            ),
            run_dir,
        )
