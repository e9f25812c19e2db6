"""The generic format: one conversation per JSON line, as chat messages with optional per-turn attributes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from steerable.data.formats.rows import Row, _as_dict, _attributes, _check_text, _numbered, _row_id, _text
from steerable.data.records import ROLES, Conversation, DataFormatError, Turn


def load_jsonl_conversations(
    rows: Iterable[Any],
    source: str,
    messages_field: str | None = "messages",
    prompt_field: str = "prompt",
    response_field: str = "response",
) -> list[Conversation]:
    """Conversations from a chat list ([{role, content, attributes?}]) or a prompt/response pair per row.

    A row's own "attributes" object labels the response of a prompt/response row.
    """
    conversations = []
    for row in _numbered(rows):
        data = _as_dict(row, source)
        if messages_field and messages_field in data:
            turns = _chat_turns(row, source, messages_field, data[messages_field])
        elif prompt_field in data or response_field in data:
            turns = [
                Turn("user", _text(row, source, prompt_field)),
                Turn(
                    "assistant",
                    _text(row, source, response_field),
                    _attributes(row, source, "attributes", data.get("attributes")),
                ),
            ]
        else:
            wanted = f"a chat list in {messages_field!r} or " if messages_field else ""
            raise DataFormatError(
                source,
                row.line,
                messages_field or prompt_field,
                f"missing; expected {wanted}{prompt_field!r} and {response_field!r} strings",
            )
        conversations.append(Conversation(turns=turns, id=_row_id(data, row), source=source))
    return conversations


def _chat_turns(row: Row, source: str, name: str, messages: Any) -> list[Turn]:
    if not isinstance(messages, list) or not messages:
        raise DataFormatError(source, row.line, name, "expected a non-empty list of {role, content} objects")
    turns = []
    for i, message in enumerate(messages):
        where = f"{name}[{i}]"
        if not isinstance(message, dict):
            raise DataFormatError(
                source, row.line, where, f"expected an object, got {type(message).__name__}"
            )
        role = message.get("role")
        if role not in ROLES:
            raise DataFormatError(source, row.line, f"{where}.role", f"expected one of {ROLES}, got {role!r}")
        if message.get("content") is None:
            raise DataFormatError(source, row.line, f"{where}.content", "missing")
        content = _check_text(row, source, f"{where}.content", message["content"])
        turns.append(
            Turn(role, content, _attributes(row, source, f"{where}.attributes", message.get("attributes")))
        )
    if all(t.role != "assistant" for t in turns):
        raise DataFormatError(source, row.line, name, "no assistant turn to train on")
    return turns
