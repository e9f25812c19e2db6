"""Output sent to a file shows plain progress lines while training runs, and every stage its duration."""

from __future__ import annotations

import logging

from steerable.cli.train import run


def test_plain_progress_lines_and_stage_durations(tmp_path, tiny_train_cfg, caplog) -> None:
    cfg = tiny_train_cfg(tmp_path, "trainer.max_steps=3", "method.stages=[train]")
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    with caplog.at_level(logging.INFO):
        run(cfg, run_dir)  # pytest captures stdout, so it is not a terminal: plain lines instead of a bar
    lines = [r.getMessage() for r in caplog.records]
    assert any(
        line.startswith("step 1/3  loss ") and "ETA" in line for line in lines
    )  # the first step at once
    assert any(line.startswith("step 3/3  loss ") and "tokens/s" in line for line in lines)
    assert any(line.startswith("stage train: done in ") for line in lines)
    assert not any("litlogger" in line for line in lines)
