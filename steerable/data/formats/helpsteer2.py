"""HelpSteer2 rows (prompt, response, five attribute scores) and NeMo-Aligner's SteerLM text format into
attribute-labelled conversations."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from steerable.data.formats.rows import (
    Row,
    _as_dict,
    _group_of,
    _in_range,
    _number,
    _numbered,
    _row_id,
    _text,
)
from steerable.data.records import Conversation, DataFormatError, Turn

HELPSTEER_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")


# Label order of NeMo-Aligner's regression reward-model files (OASST's four, then HelpSteer's five).
NEMO_ATTRIBUTES = ("quality", "toxicity", "humor", "creativity", *HELPSTEER_ATTRIBUTES)


NEMO_MISSING = -100.0


NEMO_DEFAULT_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


_NEMO_SYSTEM = "<extra_id_0>System\n"


_NEMO_TURN = re.compile(
    r"\n?<extra_id_1>(User|Assistant)\n?"
)  # as NeMo renders a turn: "\n<extra_id_1>User\n"


_NEMO_LABEL = "<extra_id_2>"  # NeMo's attribute/label slot; regression RM files end the text with it


def load_helpsteer2(rows: Iterable[Any], source: str) -> list[Conversation]:
    """HelpSteer/HelpSteer2 rows (HF {"prompt", "response", <attributes>} or NeMo-Aligner {"text", "label"}).

    The 0..4 ratings go on the final assistant turn; NeMo's -100 (not rated) is left out. Replies to one
    prompt share a split group.
    """
    conversations = []
    for row in _numbered(rows):
        data = _as_dict(row, source)
        if "text" in data and "label" in data:
            turns = _nemo_turns(row, source)
        elif "prompt" in data or "response" in data:
            turns = _helpsteer_turns(row, source)
        else:
            raise DataFormatError(
                source,
                row.line,
                None,
                "expected HelpSteer fields (prompt, response, ...) or NeMo fields (text, label)",
            )
        conversations.append(
            Conversation(turns=turns, id=_row_id(data, row), source=source, group=_group_of(turns[:-1]))
        )
    return conversations


def _helpsteer_turns(row: Row, source: str) -> list[Turn]:
    data = row.value
    prompt, response = _text(row, source, "prompt"), _text(row, source, "response")
    attributes = {
        a: _in_range(row, source, a, _number(row, source, a, data[a]), 0, 4, "HelpSteer2's attribute scale")
        for a in HELPSTEER_ATTRIBUTES
        if data.get(a) is not None
    }
    # Multi-turn HelpSteer2 prompts hold the earlier turns after NeMo markers: "q1\n<extra_id_1>Assistant\na1\n..."
    first, later = _nemo_split(prompt)
    turns = [Turn("user", first), *later]
    if turns[-1].role != "user":
        raise DataFormatError(source, row.line, "prompt", "a multi-turn prompt must end with a User turn")
    return [*turns, Turn("assistant", response, attributes)]


def _nemo_turns(row: Row, source: str) -> list[Turn]:
    """Turns of "<extra_id_0>System\\n...<extra_id_1>User\\n...<extra_id_1>Assistant\\n...\\n<extra_id_2>"."""
    text, labels = _text(row, source, "text"), row.value["label"]
    if not text.startswith(_NEMO_SYSTEM):
        raise DataFormatError(source, row.line, "text", f"does not start with {_NEMO_SYSTEM!r}")
    body = text[len(_NEMO_SYSTEM) :].rstrip().removesuffix(_NEMO_LABEL).removesuffix("\n")
    system, turns = _nemo_split(body)
    if not turns or turns[-1].role != "assistant" or all(t.role != "user" for t in turns):
        raise DataFormatError(source, row.line, "text", "expected User turns ending in an Assistant turn")
    if not isinstance(labels, list) or len(labels) != len(NEMO_ATTRIBUTES):
        raise DataFormatError(
            source, row.line, "label", f"expected a list of {len(NEMO_ATTRIBUTES)} values {NEMO_ATTRIBUTES}"
        )
    values = [_number(row, source, f"label[{i}]", v) for i, v in enumerate(labels)]
    turns[-1].attributes = {a: v for a, v in zip(NEMO_ATTRIBUTES, values, strict=True) if v != NEMO_MISSING}
    # The stock NeMo system prompt is part of the file format, not of the data; HF rows have none either.
    return [Turn("system", system), *turns] if system and system != NEMO_DEFAULT_SYSTEM else turns


def _nemo_split(text: str) -> tuple[str, list[Turn]]:
    """The text before the first <extra_id_1> turn marker, and the turns after it."""
    parts = _NEMO_TURN.split(text)
    turns = [
        Turn("user" if speaker == "User" else "assistant", content)
        for speaker, content in zip(parts[1::2], parts[2::2], strict=True)
    ]
    return parts[0], turns
