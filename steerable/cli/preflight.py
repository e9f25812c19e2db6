"""Checks of the files and folders a training config names, run with the config's own checks (before Hydra makes
a run folder, before any model loads): each failure is one line naming the key and the path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from steerable.config.schema import ConfigError


def check_train_paths(cfg: Any) -> None:
    check_data_path(cfg.data)
    check_output_root(cfg.output_root)
    check_model_folder(cfg.model)


def check_data_path(data: Any) -> None:
    """`data.path`, where given, is a non-empty file (a missing one would otherwise fail inside a stage)."""
    if not data.path:
        return
    path = Path(data.path)
    if not path.exists():
        raise ConfigError(f"data.path={data.path} does not exist (data={data.name} reads a local file there)")
    if path.is_dir():
        raise ConfigError(f"data.path={data.path} is a folder; give the data file inside it")
    if path.stat().st_size == 0:
        raise ConfigError(f"data.path={data.path} is empty (0 bytes)")


def check_output_root(output_root: str) -> None:
    """Run folders are made under `output_root`: its nearest existing folder must be a writable folder."""
    root = Path(output_root).absolute()
    existing = next(p for p in [root, *root.parents] if p.exists())
    if not existing.is_dir():
        raise ConfigError(
            f"output_root={output_root}: {existing} is a file, so no run folder can be made there"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"output_root={output_root}: cannot write in {existing} (permission denied)")


def check_model_folder(model: Any) -> None:
    from steerable.backbone.loading import refuse_remote_code  # transformers: only when a model is named

    if model.name_or_path and Path(model.name_or_path).is_dir():
        refuse_remote_code(Path(model.name_or_path), model.trust_remote_code)
