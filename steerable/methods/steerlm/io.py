"""SteerLM's files: annotated conversations as JSON lines (with the original labels beside the predicted ones),
the published policy folder, and the attribute model folder a run or a config key names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from steerable.backbone.adapters import atomic_directory
from steerable.config.schema import ConfigError
from steerable.data.formats.jsonl import load_jsonl_conversations
from steerable.data.formats.rows import read_rows
from steerable.data.records import Conversation
from steerable.methods.base import FINAL_MODEL_DIR
from steerable.rewards.scoring_model import scorer_dir
from steerable.run_dir import write_text_atomic


def publish_policy(source: Path, run_dir: Path) -> Path:
    """Copy a stage's policy to the run's checkpoints/final, atomically (the folder users load)."""
    target = run_dir / FINAL_MODEL_DIR
    with atomic_directory(target) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
    return target


def write_conversations(path: Path, conversations: list[Conversation], originals: list[list[dict]]) -> None:
    """JSON Lines in the `jsonl` data format (messages with attributes), original labels kept alongside."""
    lines = []
    for conv, original in zip(conversations, originals, strict=True):
        messages = []
        for turn, labels in zip(conv.turns, original, strict=True):
            message: dict[str, Any] = turn.as_message()
            if turn.role == "assistant":
                message["attributes"] = turn.attributes
                message["original_attributes"] = labels
            messages.append(message)
        lines.append(json.dumps({"id": conv.id, "group": conv.group, "messages": messages}))
    write_text_atomic(path, "\n".join(lines) + "\n")


def read_conversations(path: Path) -> list[Conversation]:
    return load_jsonl_conversations(read_rows(path), str(path))


def attribute_model_dir(path: str) -> Path:
    """`method.apm=`: an attribute_model run, a SteerLM run that trained one (its apm/ sub-run), or either's
    checkpoints/final folder."""
    for candidate in (Path(path), Path(path) / "apm"):
        try:
            return scorer_dir(candidate)
        except FileNotFoundError:
            continue
    raise ConfigError(
        f"method.apm={path} holds no attribute model: give an attribute_model run (outputs/attribute_model/"
        "<timestamp>), a SteerLM run that trained one (its apm/ stage) or their checkpoints/final folder"
    )
