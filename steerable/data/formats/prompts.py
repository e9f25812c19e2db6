"""Prompt-only data (benchmark prompt sets, self-instruct style rows) into prompt records."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from steerable.data.formats.rows import Row, _as_dict, _check_text, _numbered, _row_id, _text
from steerable.data.records import DataFormatError, PromptRecord


def load_prompts(rows: Iterable[Any], source: str) -> list[PromptRecord]:
    """Evaluation prompts; the shape is detected per row.

    MT-Bench/Vicuna {"question_id", "category", "turns"} (first turn), self-instruct {"instruction",
    "instances"} (instruction + input, reference = output), OASST eval files (a JSON string per line, or
    message trees: the root prompt; replies are skipped) and generic {"prompt"}.
    """
    records = []
    for row in _numbered(rows):
        record = _prompt_record(row, source)
        if record is not None:
            records.append(record)
    return records


def _prompt_record(row: Row, source: str) -> PromptRecord | None:
    value = row.value
    if isinstance(value, str):
        return _prompt(value, str(row.line))
    data = _as_dict(row, source)
    if "turns" in data:
        return _bench_prompt(row, source, data)
    if "instruction" in data:
        return _self_instruct_prompt(row, source, data)
    if "message_id" in data and "text" in data:
        if data.get("parent_id") is not None or data.get("deleted") or data.get("review_result") is False:
            return None
        return _prompt(_text(row, source, "text"), _row_id(data, row, "message_id"))
    if "prompt" in data:
        return _prompt(
            _text(row, source, "prompt"), _row_id(data, row), category=str(data.get("category") or "")
        )
    raise DataFormatError(
        source,
        row.line,
        None,
        "unknown prompt shape; expected a JSON string or an object with 'turns', 'instruction', "
        "'message_id' + 'text', or 'prompt'",
    )


def _prompt(text: str, id: str, category: str = "", reference: str | None = None) -> PromptRecord:
    return PromptRecord(
        messages=[{"role": "user", "content": text}], id=id, category=category, reference=reference
    )


def _bench_prompt(row: Row, source: str, data: dict[str, Any]) -> PromptRecord:
    turns = data["turns"]
    if not isinstance(turns, list) or not turns:
        raise DataFormatError(source, row.line, "turns", "expected a non-empty list of strings")
    references = data.get("reference")
    reference = references[0] if isinstance(references, list) and references else None
    return _prompt(
        _check_text(row, source, "turns[0]", turns[0]),
        _row_id(data, row, "question_id"),
        category=str(data.get("category") or ""),
        reference=reference if isinstance(reference, str) else None,
    )


def _self_instruct_prompt(row: Row, source: str, data: dict[str, Any]) -> PromptRecord:
    text = _text(row, source, "instruction")
    instances = data.get("instances") or []
    if not isinstance(instances, list) or not all(isinstance(i, dict) for i in instances):
        raise DataFormatError(source, row.line, "instances", "expected a list of {input, output} objects")
    first = instances[0] if instances else {}
    extra = first.get("input") or ""
    if not isinstance(extra, str):
        raise DataFormatError(source, row.line, "instances[0].input", "expected a string")
    output = first.get("output")
    return _prompt(
        f"{text}\n\n{extra}" if extra.strip() else text,
        _row_id(data, row),
        reference=output if isinstance(output, str) else None,
    )
