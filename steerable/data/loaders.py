"""A configured data set as records: `load_records` reads the rows a `DataConfig` names (a local file or a hub
split, `formats/rows.py`) and hands them to that format's loader (one module per format under `formats/`);
`split_records` makes the train / validation split."""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import partial
from typing import Any, TypeVar

from steerable.config.schema import DataConfig
from steerable.data.formats.helpsteer2 import load_helpsteer2
from steerable.data.formats.hh_rlhf import load_hh_rlhf
from steerable.data.formats.jsonl import load_jsonl_conversations
from steerable.data.formats.oasst1 import load_oasst1
from steerable.data.formats.prompts import load_prompts
from steerable.data.formats.rows import Row, load_hub_rows, read_rows
from steerable.data.records import Conversation, DataFormatError, PreferencePair, PromptRecord

Record = TypeVar("Record", Conversation, PreferencePair, PromptRecord)


DEMO_SIZE = 300


def load_records(cfg: DataConfig) -> list[Conversation] | list[PreferencePair] | list[PromptRecord]:
    """The records a data config names: read, parsed, filtered to `cfg.attributes`, cut to `cfg.max_records`.

    A local `cfg.path` wins over `cfg.hub_id`. For HH-RLHF, malformed pairs are skipped with a warning.
    """
    fmt = str(getattr(cfg.format, "value", cfg.format))
    if fmt == "demo":
        from steerable.data.demo import demo_conversations

        records: list[Any] = demo_conversations(n=cfg.max_records or DEMO_SIZE)
        source = "demo"
    else:
        rows, source = config_rows(cfg)
        records = _config_loader(cfg, fmt)(rows, source)
    if cfg.attributes:
        _keep_attributes(records, list(cfg.attributes), source)
    return records[: cfg.max_records] if cfg.max_records is not None else records


def config_rows(cfg: DataConfig) -> tuple[list[Row], str]:
    """The raw rows a data config names (a local file or a hub split) and where they came from."""
    if cfg.path:
        return read_rows(cfg.path), str(cfg.path)
    if cfg.hub_id:
        return load_hub_rows(cfg.hub_id, cfg.split), f"{cfg.hub_id}[{cfg.split}]"
    raise ValueError(f"data={cfg.name} needs data.path (a local file) or data.hub_id")


def _config_loader(cfg: DataConfig, fmt: str) -> Any:
    loaders = {
        "oasst1": load_oasst1,
        "hh-rlhf": partial(load_hh_rlhf, strict=False),
        "helpsteer2": load_helpsteer2,
        "prompts": load_prompts,
        "jsonl": partial(
            load_jsonl_conversations,
            messages_field=cfg.messages_field,
            prompt_field=cfg.prompt_field,
            response_field=cfg.response_field,
        ),
    }
    if fmt not in loaders:
        raise ValueError(f"unknown data.format {fmt!r}; expected demo or one of {sorted(loaders)}")
    return loaders[fmt]


def _keep_attributes(records: list[Any], names: list[str], source: str) -> None:
    """Drop attributes not asked for; a name found nowhere is an error (most likely a typo)."""
    found: set[str] = set()
    for record in records:
        for turn in record.turns if isinstance(record, Conversation) else ():
            found.update(turn.attributes)
            turn.attributes = {k: v for k, v in turn.attributes.items() if k in names}
    missing = [n for n in names if n not in found]
    if missing:
        raise DataFormatError(
            source, None, "attributes", f"{missing} not found in the data; it has {sorted(found) or 'none'}"
        )


def split_train_val(
    records: Sequence[Record], val_fraction: float, seed: int
) -> tuple[list[Record], list[Record]]:
    """Deterministic train/val split that never puts one group (an OASST tree, one prompt's replies) on both sides.

    Groups are shuffled with `seed` and moved to val until it holds about `val_fraction` of the records (at
    least one when the fraction is positive); at least one group always stays in train. Both sides keep the
    input order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    groups: dict[tuple[str, Any], list[int]] = {}
    for i, record in enumerate(records):
        group = getattr(record, "group", "")
        groups.setdefault(("group", group) if group else ("record", i), []).append(i)
    target = max(1, round(len(records) * val_fraction)) if val_fraction > 0 else 0
    order = list(groups)
    random.Random(seed).shuffle(order)
    val_index: set[int] = set()
    for key in order[:-1]:
        if len(val_index) >= target:
            break
        val_index.update(groups[key])
    train = [r for i, r in enumerate(records) if i not in val_index]
    val = [r for i, r in enumerate(records) if i in val_index]
    return train, val


def split_records(records: Sequence[Record], cfg: DataConfig) -> tuple[list[Record], list[Record]]:
    """Train/held-out split of a data config, then the requested half of the training side.

    Halves are cut on the same group boundaries as the held-out split and shuffled with the data seed, so
    `data.half=first` and `data.half=second` never share a record and both exclude the held-out records.
    """
    train, val = split_train_val(records, cfg.val_fraction, cfg.seed)
    if cfg.half is None:
        return train, val
    first, second = split_train_val(train, 0.5, cfg.seed + 1)
    return (first if cfg.half == "first" else second), val
