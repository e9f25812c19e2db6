"""Preference pairs for DPO, and their tokenization with labels on the compared replies only.

Where pairs come from, by `data.format`:

* `hh-rlhf`: the project's HH-RLHF loader (context + chosen/rejected replies).
* `jsonl`: one pair per row, `{"prompt": ..., "chosen": "...", "rejected": "..."}`. The context is a string
  (one user turn) or a chat list of `{role, content}` ending in a user turn, found in `data.messages_field`
  (default `messages`) or `data.prompt_field` (default `prompt`). `chosen`/`rejected` are strings, or a
  one-message assistant chat list (TRL's conversational layout). The generic jsonl loader reads
  conversations only, so pair rows are read here.
* `helpsteer2`: HelpSteer2 rates each reply on its own; replies to the same prompt (records sharing
  `Conversation.group`) are paired, the more helpful one chosen. Equal helpfulness says nothing about
  preference, so ties are skipped; a prompt with n replies gives every untied pair of them. The split is
  made on prompts before pairing, so no prompt has pairs on both sides.

Tokenizing keeps a pair only when both sides keep reply tokens under `data.max_length` and they differ:
with long contexts both replies are often cut before they diverge, and such a pair has no signal.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any

import torch

from steerable.config.schema import DataConfig
from steerable.data.formats.jsonl import load_jsonl_conversations
from steerable.data.formats.rows import Row
from steerable.data.loaders import config_rows, load_records, split_records
from steerable.data.records import Conversation, DataFormatError, PreferencePair
from steerable.data.tokenize import (
    MAX_CHARS_PER_TOKEN,
    LengthPolicyStats,
    PaddingCollator,
    TokenizedExample,
    clipped,
    fit_length,
    tokenize_conversation,
)
from steerable.methods.dpo.config import data_format

log = logging.getLogger(__name__)

HELPSTEER_PREFERENCE = "helpfulness"

# ------------------------------------------------------------------------------------------------ loading


def split_pairs(data: DataConfig) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Training and held-out pairs of a data config (held-out = the project's `split_records`)."""
    fmt = data_format(data)
    if fmt == "helpsteer2":
        train, val = split_records(load_records(data), data)
        return helpsteer_pairs(train), helpsteer_pairs(val)
    if fmt == "hh-rlhf":
        return split_records(load_records(data), data)
    if fmt == "jsonl":
        pairs = jsonl_pairs(*config_rows(data), data)
        return split_records(pairs[: data.max_records] if data.max_records else pairs, data)
    raise ValueError(f"method=dpo cannot build preference pairs from data.format={fmt}")


def helpsteer_pairs(conversations: list[Conversation]) -> list[PreferencePair]:
    """Untied pairs of replies to one prompt, the more helpful one chosen (groups in first-seen order)."""
    groups: dict[str, list[Conversation]] = {}
    for conv in conversations:
        groups.setdefault(conv.group or conv.id, []).append(conv)
    pairs = []
    for replies in groups.values():
        for a, b in itertools.combinations(replies, 2):
            score_a, score_b = (_helpfulness(c) for c in (a, b))
            if score_a is None or score_b is None or score_a == score_b:
                continue
            better, worse = (a, b) if score_a > score_b else (b, a)
            pairs.append(
                PreferencePair(
                    context=better.turns[:-1],
                    chosen=better.turns[-1].content,
                    rejected=worse.turns[-1].content,
                    id=f"{better.id}>{worse.id}",
                    source=better.source,
                )
            )
    return pairs


def _helpfulness(conv: Conversation) -> float | None:
    last = conv.turns[-1]
    return last.attributes.get(HELPSTEER_PREFERENCE) if last.role == "assistant" else None


def jsonl_pairs(rows: list[Row], source: str, data: DataConfig) -> list[PreferencePair]:
    """One pair per {context, chosen, rejected} row; errors name file:line and the field."""
    return [_jsonl_pair(row, source, data) for row in rows]


def _jsonl_pair(row: Row, source: str, data: DataConfig) -> PreferencePair:
    if not isinstance(row.value, dict):
        raise DataFormatError(
            source, row.line, None, f"expected a JSON object, got {type(row.value).__name__}"
        )
    replies = {name: _reply(row, source, name) for name in ("chosen", "rejected")}
    key = next((k for k in (data.messages_field, data.prompt_field) if k and k in row.value), None)
    if key is None:
        wanted = [k for k in (data.messages_field, data.prompt_field) if k]
        raise DataFormatError(source, row.line, None, f"missing the context: expected a field of {wanted}")
    context, keep_id = row.value[key], {k: v for k, v in row.value.items() if k == "id"}
    if isinstance(context, str):  # checked as a prompt/response row, so errors name the user's field
        fields = {**keep_id, key: context, "chosen": replies["chosen"]}
        conv = load_jsonl_conversations([Row(row.line, fields)], source, None, key, "chosen")[0]
    else:  # a chat list: the reply appended as the last turn, so the loader checks every message
        chat = (
            [*context, {"role": "assistant", "content": replies["chosen"]}]
            if isinstance(context, list)
            else context
        )
        conv = load_jsonl_conversations([Row(row.line, {**keep_id, key: chat})], source, key)[0]
    turns = conv.turns[:-1]
    if not turns or turns[-1].role != "user":
        raise DataFormatError(source, row.line, key, "the context must end with a user turn")
    return PreferencePair(context=turns, id=conv.id, source=source, **replies)


def _reply(row: Row, source: str, name: str) -> str:
    value = row.value.get(name)
    one = value[0] if isinstance(value, list) and len(value) == 1 else None
    if isinstance(one, dict) and one.get("role") == "assistant":  # [{"role": "assistant", "content": ...}]
        value = one.get("content")
    if not isinstance(value, str) or not value.strip():
        raise DataFormatError(
            source, row.line, name, "expected a non-empty reply (a string or one assistant message)"
        )
    return value


# ------------------------------------------------------------------------------------------- tokenizing


@dataclass
class TokenizedPair:
    """Context + chosen and context + rejected, labels on each reply (and its end-of-turn token) only."""

    chosen: TokenizedExample
    rejected: TokenizedExample


@dataclass
class PairStats:
    kept: int = 0
    truncated: int = 0  # pairs with at least one side cut to data.max_length
    dropped: int = 0  # a side too long under too_long=drop, or cut before its reply started
    # Both sides the same tokens (equal replies, or replies cut at max_length before they differ): such a
    # pair has h = 0 whatever the weights, so it gives no gradient and would only dilute means and accuracy.
    identical: int = 0


def tokenize_pair(tokenizer: Any, pair: PreferencePair, eot_id: int, limit: int) -> TokenizedPair:
    context = pair.prompt_messages
    sides = [[*context, {"role": "assistant", "content": reply}] for reply in (pair.chosen, pair.rejected)]
    chosen, rejected = (tokenize_conversation(tokenizer, clipped(s, limit), eot_id) for s in sides)
    return TokenizedPair(chosen, rejected)


def tokenize_pairs(
    tokenizer: Any, pairs: list[PreferencePair], max_length: int, policy: str, eot_id: int
) -> tuple[list[TokenizedPair], PairStats]:
    """Tokenized pairs under the run's length policy; a pair is kept only when both sides keep reply tokens."""
    stats, kept = PairStats(), []
    for pair in pairs:
        full = tokenize_pair(tokenizer, pair, eot_id, max_length * MAX_CHARS_PER_TOKEN)
        side_stats = LengthPolicyStats()
        fitted = [fit_length(side, max_length, policy, side_stats) for side in (full.chosen, full.rejected)]
        if fitted[0] is None or fitted[1] is None:
            stats.dropped += 1
            continue
        if fitted[0].input_ids == fitted[1].input_ids:
            stats.identical += 1
            continue
        stats.kept += 1
        stats.truncated += int(side_stats.truncated > 0)
        kept.append(TokenizedPair(fitted[0], fitted[1]))
    if stats.dropped or stats.identical:
        log.warning(
            "%d of %d pairs left out at data.max_length=%d: %d without reply tokens or too long (too_long=%s), "
            "%d identical once truncated; %d of the kept pairs are truncated",
            stats.dropped + stats.identical,
            len(pairs),
            max_length,
            stats.dropped,
            policy,
            stats.identical,
            stats.truncated,
        )
    return kept, stats


class PairCollator:
    """One right-padded batch of 2B rows: the B chosen sequences, then their B rejected ones."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad = PaddingCollator(pad_token_id)

    def __call__(self, batch: list[TokenizedPair]) -> dict[str, torch.Tensor]:
        return self.pad([p.chosen for p in batch] + [p.rejected for p in batch])
