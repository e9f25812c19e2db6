"""Runs cannot collide: folders are created exclusively, a running run holds a lock, and resume=auto skips a
run that another process is writing."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from steerable.run_dir import RunDirError, RunLock, is_locked, latest_unfinished, new_run_dir, resolve_run_dir


def make_folders(root: str, count: int) -> list[str]:
    return [str(new_run_dir(Path(root), "sft")) for _ in range(count)]


def test_two_processes_starting_in_the_same_second_get_distinct_folders(tmp_path) -> None:
    with ProcessPoolExecutor(max_workers=2) as pool:
        made = [f for batch in pool.map(make_folders, [str(tmp_path)] * 2, [15, 15]) for f in batch]
    assert len(made) == len(set(made)) == 30
    assert all(Path(f).is_dir() for f in made)


def started_run(root: Path, name: str) -> Path:
    run = root / "sft" / name
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    return run


def test_a_locked_run_cannot_be_entered_twice(tmp_path) -> None:
    run = started_run(tmp_path, "2026-01-01_00-00-00")
    lock = RunLock(run)
    try:
        assert is_locked(run)
        with pytest.raises(RunDirError, match=r"is in use by pid \d+"):
            RunLock(run)
    finally:
        lock.release()
    assert not is_locked(run)
    RunLock(run).release()  # free again


def test_resume_auto_skips_a_run_another_process_is_writing(tmp_path) -> None:
    older = started_run(tmp_path, "2026-01-01_00-00-00")
    busy = started_run(tmp_path, "2026-01-02_00-00-00")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from steerable.run_dir import RunLock; "
            "lock = RunLock(Path(sys.argv[1])); print('locked', flush=True); time.sleep(60)",
            str(busy),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert latest_unfinished(tmp_path, "sft") == older
        assert resolve_run_dir(str(tmp_path), "sft", "auto") == str(older)
        with pytest.raises(RunDirError, match="in use"):
            RunLock(busy)
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert latest_unfinished(tmp_path, "sft") == busy  # the lock died with its process
