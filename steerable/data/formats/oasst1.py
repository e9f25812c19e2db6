"""OpenAssistant (OASST1) message trees: every root-to-leaf thread is one conversation, with the messages'
crowd labels as attributes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from steerable.data.formats.rows import Row, _as_dict, _in_range, _number, _numbered, _text
from steerable.data.records import Conversation, DataFormatError, Turn

OASST_ROLES = {"prompter": "user", "assistant": "assistant"}


@dataclass
class _OasstMessage:
    line: int
    id: str
    parent: str | None
    role: str
    text: str
    tree: str
    labels: dict[str, float]


def load_oasst1(rows: Iterable[Any], source: str) -> list[Conversation]:
    """Every root-to-leaf thread of every OASST1 message tree, each ending in an assistant reply.

    Deleted messages and those that failed review are dropped with their replies; prompts nobody answered
    are pruned, so no thread ends on a user turn. Assistant labels v in [0, 1] become round(v*4) (0..4), as
    in SteerLM. Threads come in file order of their roots, then of the replies.
    """
    kept: dict[str, _OasstMessage] = {}
    seen: set[str] = set()
    for row in _numbered(rows):
        message = _oasst_message(row, source)
        if message.id in seen:
            raise DataFormatError(source, row.line, "message_id", f"duplicate message id {message.id!r}")
        seen.add(message.id)
        data = row.value
        if not data.get("deleted") and data.get("review_result") is not False:
            kept[message.id] = message

    roots, children = _oasst_tree(kept, seen, source)
    return [
        Conversation(
            turns=[Turn(OASST_ROLES[m.role], m.text, m.labels) for m in thread],
            id=thread[-1].id,
            source=source,
            group=root.tree or root.id,
        )
        for root in roots
        for thread in _oasst_threads(root, children)
    ]


def _oasst_message(row: Row, source: str) -> _OasstMessage:
    data = _as_dict(row, source)
    role = _text(row, source, "role")
    if role not in OASST_ROLES:
        raise DataFormatError(source, row.line, "role", f"expected 'prompter' or 'assistant', got {role!r}")
    parent = data.get("parent_id")
    if parent is not None and not isinstance(parent, str):
        raise DataFormatError(
            source, row.line, "parent_id", f"expected a string or null, got {type(parent).__name__}"
        )
    tree = data.get("message_tree_id")
    return _OasstMessage(
        line=row.line,
        id=_text(row, source, "message_id"),
        parent=parent,
        role=role,
        text=_text(row, source, "text"),
        tree=tree if isinstance(tree, str) else "",
        labels=_oasst_labels(row, source) if role == "assistant" else {},
    )


def _oasst_labels(row: Row, source: str) -> dict[str, float]:
    """OASST's parallel lists {name: [...], value: [...], count: [...]} as {name: round(value*4)}."""
    labels = row.value.get("labels")
    if labels is None:
        return {}
    names = labels.get("name") if isinstance(labels, dict) else None
    values = labels.get("value") if isinstance(labels, dict) else None
    if not isinstance(names, list) or not isinstance(values, list) or len(names) != len(values):
        raise DataFormatError(
            source, row.line, "labels", "expected {name: [...], value: [...]} of equal length"
        )
    return {
        str(name): float(round(_oasst_value(row, source, f"labels.value[{i}]", value) * 4))
        for i, (name, value) in enumerate(zip(names, values, strict=True))
        if value is not None
    }


def _oasst_value(row: Row, source: str, name: str, value: Any) -> float:
    return _in_range(row, source, name, _number(row, source, name, value), 0.0, 1.0, "OASST's label scale")


def _oasst_tree(
    kept: dict[str, _OasstMessage], seen: set[str], source: str
) -> tuple[list[_OasstMessage], dict[str, list[_OasstMessage]]]:
    """Roots and replies-by-parent among kept messages, in file order."""
    roots: list[_OasstMessage] = []
    children: dict[str, list[_OasstMessage]] = {}
    for message in kept.values():
        if message.parent is None:
            roots.append(message)
        elif message.parent in kept:
            children.setdefault(message.parent, []).append(message)
        elif message.parent not in seen:
            raise DataFormatError(
                source, message.line, "parent_id", f"parent message {message.parent!r} is not in the data"
            )
        # else: the parent was deleted or failed review, and its whole branch goes with it
    return roots, children


def _oasst_threads(
    node: _OasstMessage, children: dict[str, list[_OasstMessage]]
) -> Iterator[list[_OasstMessage]]:
    """Paths from `node` down to a leaf, pruned so every path ends with an assistant message."""
    ended = False
    for child in children.get(node.id, []):
        for path in _oasst_threads(child, children):
            ended = True
            yield [node, *path]
    if not ended and node.role == "assistant":
        yield [node]
