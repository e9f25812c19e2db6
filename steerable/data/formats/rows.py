"""Reading rows: local JSONL / JSON / Parquet files (gzip too) and hub splits, each value numbered with the line
or row it came from, and the field checks every format uses, so an error names file:line and the field."""

from __future__ import annotations

import gzip
import hashlib
import json
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from steerable.data.records import DataFormatError, Turn


class Row(NamedTuple):
    """One input value and where it came from, so errors can point at it."""

    line: int  # 1-based line of a JSON Lines file; row number for Parquet, JSON arrays' start line, hub rows
    value: Any


def _numbered(rows: Iterable[Any]) -> list[Row]:
    """Accept `Row`s as they are; number plain values from 1 (hub rows, inline test data)."""
    return [r if isinstance(r, Row) else Row(i, r) for i, r in enumerate(rows, 1)]


def read_rows(path: str | Path) -> list[Row]:
    """Rows of a JSON Lines (optionally gzipped), JSON array or Parquet file.

    JSON is parsed line by line with `json` rather than `datasets`: it names the bad line, accepts rows of
    differing shapes (datasets infers one Arrow schema and fails on mixed rows) and reads files whose lines
    are bare strings (the OASST eval prompt files). Nothing is written next to the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    name = path.name.lower()
    if name.endswith(".parquet"):
        return _read_parquet(path)
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".json", ".json.gz")):
        lines = list(_text_lines(path))
        text_start = next((text.lstrip() for _, text in lines if text.strip()), "")
        if name.endswith((".json", ".json.gz")) and text_start.startswith("["):
            return _parse_json_array("".join(text for _, text in lines), str(path))
        return _parse_json_lines(lines, str(path))
    raise DataFormatError(
        str(path), None, None, "unsupported file type; expected .jsonl, .jsonl.gz, .json or .parquet"
    )


def load_hub_rows(hub_id: str, split: str) -> list[Row]:
    """Rows of a Hugging Face hub data set (needs network access or a warm cache)."""
    import datasets

    return _numbered(datasets.load_dataset(hub_id, split=split))


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, decoded line) pairs; decoding per line lets a bad byte name its line."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    line_no = 0
    try:
        with opener(path, "rb") as f:
            for line_no, raw in enumerate(f, 1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise DataFormatError(
                        str(path), line_no, None, f"not UTF-8 text (byte {err.start})"
                    ) from None
                yield line_no, text.removeprefix("\ufeff") if line_no == 1 else text
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError; a truncated gzip raises EOFError
        raise DataFormatError(
            str(path), line_no + 1 if line_no else None, None, f"cannot read: {err}"
        ) from None


def _parse_json_lines(lines: Iterable[tuple[int, str]], source: str) -> list[Row]:
    rows = []
    for line_no, text in lines:
        if not text.strip():
            continue
        try:
            rows.append(Row(line_no, json.loads(text)))
        except json.JSONDecodeError as err:
            raise DataFormatError(
                source, line_no, None, f"invalid JSON: {err.msg} (column {err.colno})"
            ) from None
    return rows


def _parse_json_array(text: str, source: str) -> list[Row]:
    """Elements of a top-level JSON array, each numbered by the line it starts on."""
    decoder, rows = json.JSONDecoder(), []
    pos, line, counted = text.index("[") + 1, 1, 0
    try:
        while True:
            pos = _skip_space(text, pos)
            if text.startswith("]", pos) and not rows:
                break
            value, end = decoder.raw_decode(text, pos)
            line, counted = line + text.count("\n", counted, pos), pos
            rows.append(Row(line, value))
            pos = _skip_space(text, end)
            if text.startswith(",", pos):
                pos += 1
            elif text.startswith("]", pos):
                break
            else:
                raise json.JSONDecodeError("expected ',' or ']' after an array element", text, pos)
        if text[pos + 1 :].strip():
            raise json.JSONDecodeError("extra data after the array", text, _skip_space(text, pos + 1))
    except json.JSONDecodeError as err:
        raise DataFormatError(
            source, err.lineno, None, f"invalid JSON: {err.msg} (column {err.colno})"
        ) from None
    return rows


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _read_parquet(path: Path) -> list[Row]:
    """Parquet through `datasets`, cached in a throwaway folder so nothing lands in ~/.cache or beside the file."""
    import datasets

    with tempfile.TemporaryDirectory(prefix="steerable-parquet-") as cache:
        try:
            ds = datasets.load_dataset(
                "parquet", data_files=str(path), split="train", cache_dir=cache, keep_in_memory=True
            )
        except Exception as err:  # datasets and pyarrow raise many types for an unreadable file
            raise DataFormatError(str(path), None, None, f"cannot read Parquet: {err}") from err
        return _numbered(ds.to_list())


def _as_dict(row: Row, source: str) -> dict[str, Any]:
    if not isinstance(row.value, dict):
        raise DataFormatError(
            source, row.line, None, f"expected a JSON object, got {type(row.value).__name__}"
        )
    return row.value


def _text(row: Row, source: str, name: str) -> str:
    """A required string field of the row."""
    value = _as_dict(row, source).get(name)
    if value is None:
        raise DataFormatError(source, row.line, name, "missing")
    return _check_text(row, source, name, value)


def _check_text(row: Row, source: str, name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise DataFormatError(source, row.line, name, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise DataFormatError(
            source, row.line, name, "empty text (a prompt or reply needs words to learn from)"
        )
    return value


def _in_range(row: Row, source: str, name: str, value: float, low: float, high: float, scale: str) -> float:
    if not low <= value <= high:
        raise DataFormatError(source, row.line, name, f"{value:g} is outside {scale} ({low:g}..{high:g})")
    return value


def _number(row: Row, source: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataFormatError(source, row.line, name, f"expected a number, got {type(value).__name__}")
    return float(value)


def _attributes(row: Row, source: str, name: str, value: Any) -> dict[str, float]:
    """An optional {attribute: number} dict; null values mean 'not labelled' and are left out."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DataFormatError(
            source, row.line, name, f"expected an object of numbers, got {type(value).__name__}"
        )
    return {k: _number(row, source, f"{name}.{k}", v) for k, v in value.items() if v is not None}


def _row_id(data: dict[str, Any], row: Row, key: str = "id") -> str:
    value = data.get(key)
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else str(row.line)


def _group_of(turns: Sequence[Turn]) -> str:
    """A short stable key for a context, so replies to one prompt share a split group."""
    text = "\x1e".join(f"{t.role}\x1f{t.content}" for t in turns)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]
