"""The run folder contract: outputs/<task>/<timestamp>/ holding .hydra/, checkpoints/, metrics.csv, report.md.

`resume=auto` picks the newest unfinished run of the same task, so an interrupted job restarted with the
same command continues in its own folder instead of starting over.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from steerable.errors import UserError

FINAL_MODEL_DIR = "checkpoints/final"  # in a run folder: the model its training published

COMPLETE_MARKER = ".steerable/complete"
WANDB_ID_FILE = ".steerable/wandb_id"
LOCK_FILE = ".steerable/lock"
HARDWARE_FILE = "hardware.json"  # the precision chosen on the machine that ran it, and why

Row = TypeVar("Row")


class RunDirError(UserError, ValueError):
    pass


def is_writer() -> bool:
    """Rank 0 (or the only process) writes run-folder files; other ranks may not see them yet."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def is_complete(run_dir: Path) -> bool:
    return (run_dir / COMPLETE_MARKER).is_file()


def mark_complete(run_dir: Path, summary: dict) -> None:
    write_text_atomic(run_dir / COMPLETE_MARKER, json.dumps(summary, indent=2, sort_keys=True, default=str))


def new_run_dir(root: Path, task: str) -> Path:
    """A folder created here and now (exclusively: two runs started in the same second get two folders)."""
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    (root / task).mkdir(parents=True, exist_ok=True)
    candidate, n = root / task / stamp, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1
            candidate = root / task / f"{stamp}_{n}"


class RunLock:
    """An exclusive lock on a run folder for as long as this process writes into it (released when the
    process ends, however it ends): a second run cannot resume into it or write beside it."""

    def __init__(self, run_dir: Path) -> None:
        path = run_dir / LOCK_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(path, "a+")  # noqa: SIM115  (held open for the run's lifetime)
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "another process"
            self.handle.close()
            raise RunDirError(
                f"{run_dir} is in use by {holder}; wait for it to finish, or start a new run (no resume=)"
            ) from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"pid {os.getpid()}")
        self.handle.flush()

    def release(self) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def is_locked(run_dir: Path) -> bool:
    path = run_dir / LOCK_FILE
    if not path.is_file():
        return False
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def latest_unfinished(root: Path, task: str) -> Path | None:
    task_dir = root / task
    if not task_dir.is_dir():
        return None
    runs = sorted(
        (p for p in task_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()), key=lambda p: p.name
    )
    # A folder without checkpoints or finished stages failed before any work (e.g. a config error).
    started = [p for p in runs if (p / "checkpoints").is_dir() or (p / "stages").is_dir()]
    unfinished = [p for p in started if not is_complete(p) and not is_locked(p)]  # locked: running now
    return unfinished[-1] if unfinished else None


def resolve_run_dir(root: str, task: str, resume: str | None) -> str:
    """Hydra resolver behind `hydra.run.dir`: a fresh timestamped folder, or the folder being resumed."""
    root_path = Path(root)
    if resume in (None, "", "null", "None"):
        return str(new_run_dir(root_path, task))
    if resume == "auto":
        found = latest_unfinished(root_path, task)
        return str(found if found is not None else new_run_dir(root_path, task))
    path = Path(resume)
    if not (path / ".hydra").is_dir():
        raise RunDirError(f"resume={resume!r} is not a run folder (no .hydra/ inside)")
    return str(path)


def eval_home(run: Any) -> str:
    """Hydra resolver behind `steerable-eval`'s folder: `<run>/eval`, or for a list of runs (eval=leaderboard)
    `<their common parent folder>/eval`."""
    if isinstance(run, str):
        return f"{run}/eval"
    paths = [str(Path(str(item)).resolve()) for item in run]
    return f"{os.path.commonpath(paths) if paths else '.'}/eval"


def contained(
    run_dir: Path, value: str, named: set[str] | frozenset = frozenset(), field: str = "path"
) -> Path:
    """A path read from a run folder's own files, followed only inside that folder, or to an artifact the
    run's config names (method.apm=, method.annotated=, method.experts=, method.policy=): a folder someone
    else made cannot point our reads anywhere else."""
    path = Path(value)
    resolved = (run_dir / path if not path.is_absolute() else path).resolve()
    inside = resolved == run_dir.resolve() or run_dir.resolve() in resolved.parents
    if inside or any(resolved == Path(n).resolve() or Path(n).resolve() in resolved.parents for n in named):
        return resolved
    raise RunDirError(
        f"{run_dir}: {field}={value} points outside the run folder and is not named in its config; "
        "pass the artifact on the command line (e.g. method.apm=<run>) to use it"
    )


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: Path, rows: Iterable[Any]) -> None:
    """Dataclass rows, one JSON object a line, written atomically: a stage's records for the stages after it."""
    write_text_atomic(path, "".join(json.dumps(asdict(row)) + "\n" for row in rows))


def read_jsonl(path: Path, row: Callable[..., Row], stage: str) -> list[Row]:
    """The rows `write_jsonl` wrote, rebuilt by `row(**fields)`; a missing file names the `stage` that writes it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the {stage} stage first")
    return [row(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def wandb_run_id(run_dir: Path) -> str:
    """One W&B id per run folder, reused when the run resumes."""
    path = run_dir / WANDB_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    write_text_atomic(path, run_id)
    return run_id
