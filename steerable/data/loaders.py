"""Turn files of several public data formats into the project's record types.

Readers (`read_rows`, `load_hub_rows`) produce `Row`s: each value with the 1-based line it came from (the row
number for Parquet and hub data), so every format error can name file:line. Loaders (`load_oasst1`,
`load_hh_rlhf`, `load_helpsteer2`, `load_prompts`, `load_jsonl_conversations`) take those rows, or plain
values, which are then numbered from 1. `load_records` ties a `DataConfig` to the right reader and loader.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import random
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from steerable.config.schema import DataConfig
from steerable.data.records import ROLES, Conversation, DataFormatError, PreferencePair, PromptRecord, Turn

log = logging.getLogger(__name__)

Record = TypeVar("Record", Conversation, PreferencePair, PromptRecord)


class Row(NamedTuple):
    """One input value and where it came from, so errors can point at it."""

    line: int  # 1-based line of a JSON Lines file; row number for Parquet, JSON arrays' start line, hub rows
    value: Any


def _numbered(rows: Iterable[Any]) -> list[Row]:
    """Accept `Row`s as they are; number plain values from 1 (hub rows, inline test data)."""
    return [r if isinstance(r, Row) else Row(i, r) for i, r in enumerate(rows, 1)]


# ------------------------------------------------------------------------------------------------- readers


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


# ---------------------------------------------------------------------------------------- field helpers


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


# ----------------------------------------------------------------------------------------------- OASST1

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


# ---------------------------------------------------------------------------------------------- HH-RLHF

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


# ------------------------------------------------------------------------------------------- HelpSteer2

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


# ------------------------------------------------------------------------------------------------ prompts


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


# ------------------------------------------------------------------------------------------ generic JSONL


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


# ------------------------------------------------------------------------------------------- entry points

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
