"""Anthropic HH-RLHF: chosen / rejected transcripts of Human: / Assistant: turns into preference pairs
over a shared context."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from steerable.data.formats.rows import Row, _numbered, _text
from steerable.data.records import DataFormatError, PreferencePair, Turn

log = logging.getLogger(__name__)

HH_ASSISTANT = "\n\nAssistant:"
_HH_SPEAKER = re.compile(r"\n\n(Human|Assistant):")


def load_hh_rlhf(rows: Iterable[Any], source: str, *, strict: bool = True) -> list[PreferencePair]:
    """HH-RLHF {"chosen", "rejected"} transcripts as pairs, split at the LAST "\\n\\nAssistant:".

    With `strict=False`, pairs whose transcripts disagree before the compared replies are skipped and
    counted in a warning: the public files have a few (a reply with "Human:" run into it) and one bad pair
    should not stop a training run. Missing or wrong-typed fields always raise.
    """
    pairs, skipped = [], []
    for row in _numbered(rows):
        chosen, rejected = _text(row, source, "chosen"), _text(row, source, "rejected")
        try:
            pairs.append(_hh_pair(row, source, chosen, rejected))
        except DataFormatError as err:
            if strict:
                raise
            skipped.append(err)
    if skipped:
        log.warning("%s: skipped %d malformed HH pairs, e.g. %s", source, len(skipped), skipped[0])
    return pairs


def _hh_pair(row: Row, source: str, chosen: str, rejected: str) -> PreferencePair:
    prefix, chosen_reply = _hh_split(row, source, "chosen", chosen)
    rejected_prefix, rejected_reply = _hh_split(row, source, "rejected", rejected)
    if prefix != rejected_prefix:
        raise DataFormatError(
            source,
            row.line,
            "rejected",
            "the conversation before the last Assistant turn differs from 'chosen'",
        )
    return PreferencePair(
        context=_hh_context(row, source, prefix),
        chosen=chosen_reply,
        rejected=rejected_reply,
        id=str(row.line),
        source=source,
    )


def _hh_split(row: Row, source: str, name: str, transcript: str) -> tuple[str, str]:
    cut = transcript.rfind(HH_ASSISTANT)
    if cut < 0:
        raise DataFormatError(source, row.line, name, 'no "\\n\\nAssistant:" turn in the transcript')
    return transcript[:cut], transcript[cut + len(HH_ASSISTANT) :].removeprefix(" ")


def _hh_context(row: Row, source: str, prefix: str) -> list[Turn]:
    """Alternating user/assistant turns; a speaker repeated back to back (it happens) is merged into one turn."""
    if prefix.startswith("Human:"):
        prefix = "\n\n" + prefix
    parts = _HH_SPEAKER.split(prefix)
    if parts[0].strip() or len(parts) < 3:
        raise DataFormatError(source, row.line, "chosen", 'the transcript does not start with "\\n\\nHuman:"')
    turns: list[Turn] = []
    for speaker, text in zip(parts[1::2], parts[2::2], strict=True):
        role, content = ("user" if speaker == "Human" else "assistant"), text.removeprefix(" ")
        if turns and turns[-1].role == role:
            turns[-1].content += "\n\n" + content
        else:
            turns.append(Turn(role, content))
    if turns[0].role != "user" or turns[-1].role != "user":
        raise DataFormatError(
            source, row.line, "chosen", "the context before the compared replies must end with a Human turn"
        )
    return turns
