"""Where `steerable-export` may write, checked before any work, and the one way it writes there.

An export writes only what it creates: `out=` is a new path, an empty folder, or an earlier export (recognised by
the marker file every export writes, and replaced only with `overwrite=true`). It is never a file, never a run
folder, never inside one and never a folder holding one. The folder is built in a temporary sibling and renamed
into place, so a failure at any point leaves `out=` (and the run) byte for byte as they were.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path

from steerable.config.schema import ConfigError

EXPORT_MARKER = (
    ".steerable-export.json"  # written into every export: the only folders overwrite=true replaces
)


def is_run_folder(path: Path) -> bool:
    """run_dir.py's contract: Hydra's saved config, or steerable's own bookkeeping folder."""
    return (path / ".hydra" / "config.yaml").is_file() or (path / ".steerable").is_dir()


def is_export(path: Path) -> bool:
    return (path / EXPORT_MARKER).is_file()


def check_export_target(out: Path, run_dir: Path, overwrite: bool) -> None:
    """Refuse every `out=` the export could lose data in, with the reason, before anything is loaded."""
    target, run = Path(out).resolve(), Path(run_dir).resolve()
    where = f"out={out}"
    if Path(out).is_symlink():
        raise ConfigError(f"{where} is a symbolic link; give the folder itself or a new name")
    if target == run or run in target.parents:
        raise ConfigError(f"{where} is inside the run folder {run_dir}; export to a folder outside it")
    if target in run.parents:
        raise ConfigError(f"{where} holds the run folder {run_dir}; export to a new folder beside it")
    if enclosing := next((p for p in [target, *target.parents] if is_run_folder(p)), None):
        raise ConfigError(f"{where} is inside the run folder {enclosing}; export to a folder outside any run")
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{where} is a file, not a folder; choose a new folder name")
    if target.is_dir():
        _check_existing(target, where, overwrite)
    _check_writable(target, where)


def _check_existing(target: Path, where: str, overwrite: bool) -> None:
    if not any(target.iterdir()):
        return  # an empty folder: replaced by the export, nothing lost
    if not is_export(target):
        raise ConfigError(
            f"{where} already holds files that steerable-export did not write (no {EXPORT_MARKER}); "
            "choose a new or empty folder"
        )
    if not overwrite:
        raise ConfigError(f"{where} holds an earlier export; add overwrite=true to replace it")
    if any(is_run_folder(p) for p in target.rglob("*") if p.is_dir()):
        raise ConfigError(f"{where} is an earlier export that now holds a run folder; it is left alone")


def _check_writable(target: Path, where: str) -> None:
    existing = next(p for p in target.parents if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{where}: {existing} is a file, so no folder can be made under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{where}: cannot write in {existing} (permission denied); choose another out=")


@contextmanager
def export_directory(out: Path, run_dir: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary sibling of `out` to fill; on success it gets the marker and is renamed to `out` (an earlier
    export there is swapped out first and removed only once the new one is in place). On failure the
    temporary folder and any parent folders made for it are removed, and `out` is untouched."""
    out = Path(os.path.abspath(out))  # `out=.` or `out=x/..` still has a real name and parent
    check_export_target(out, run_dir, overwrite)
    made = _make_parents(out.parent)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.export-"))
    try:
        yield tmp
        marker = {"run": str(Path(run_dir).resolve()), "exported": datetime.now(timezone.utc).isoformat()}
        (tmp / EXPORT_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        check_export_target(out, run_dir, overwrite)  # again: the folder may have changed meanwhile
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in made:
            _remove_if_empty(folder)
        raise


def _move_into_place(tmp: Path, out: Path) -> None:
    if not (out.is_dir() and any(out.iterdir())):
        os.replace(tmp, out)  # new, or an empty folder (rename replaces an empty directory)
        return
    graveyard = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.replaced-"))
    os.replace(out, graveyard / out.name)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(graveyard / out.name, out)
        graveyard.rmdir()
        raise
    shutil.rmtree(graveyard)  # the earlier export, checked by its marker


def _make_parents(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; the ones created, innermost first."""
    missing = [p for p in [folder, *folder.parents] if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_if_empty(folder: Path) -> None:
    with suppress(OSError):
        folder.rmdir()
