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


def test_debug_fast_superhf_stops_at_max_steps_with_real_totals(tmp_path, caplog) -> None:
    """SuperHF is one pass over its prompts, at most trainer.max_steps superbatches: debug=fast makes it 2, and
    the progress lines show that total (not Lightning's -1 for an epoch-bounded loop)."""
    from steerable.cli.common import validate
    from tests.conftest import TINY_RUN, compose_config

    composed = compose_config(
        "train",
        [*TINY_RUN, "method=superhf", "reward=[verbosity]", "method.reward=verbosity", "debug=fast"],
    )
    assert composed.method.completions_per_prompt == 4  # conf/debug_method/fast_superhf.yaml applied
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    with caplog.at_level(logging.INFO):
        results = run(validate(composed), run_dir)
    assert results["train"]["superbatches"] == 2 and results["train"]["steps"] == 2
    assert results["train"]["train_prompts"] == 4  # 2 superbatches x prompt_accumulation 2, of 24 records
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("step 2/2  loss ") for line in lines)
    assert not any("/-1" in line for line in lines)
    assert not any(line.startswith("stage train already finished") for line in lines)  # eval requires it


def test_skipping_is_said_once_and_only_for_stages_finished_before(tmp_path, caplog) -> None:
    from steerable.pipeline import StageResults, Step, run_stages

    stages = {
        "a": Step(lambda done: {"n": 1}),
        "b": Step(lambda done: {"n": done.require("a")["n"] + 1}, requires=("a",)),
    }
    with caplog.at_level(logging.INFO, logger="steerable.pipeline"):
        run_stages(tmp_path, stages, ["a", "b"])  # b requires a, which this run just finished
    assert not any("skipping" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="steerable.pipeline"):
        c = Step(lambda done: {"n": done.require("a")["n"]}, requires=("a",))
        run_stages(tmp_path, {**stages, "c": c}, ["a", "b", "c"])
    skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert [m.split()[1] for m in skipped] == ["a", "b"]  # a once, though c requires it again
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="steerable.pipeline"):
        assert StageResults.finished(tmp_path, ["a", "b"]).require("a")["n"] == 1  # an evaluation reads it
    assert not any("skipping" in r.getMessage() for r in caplog.records)
