"""Render conversations with the tokenizer's chat template and build exact loss masks.

The loss covers every assistant turn's content and its end-of-turn token, nothing else: system and user
turns, role headers and the separator after end-of-turn get label -100. Boundaries come from rendering
growing prefixes of the conversation, so they hold for any chat template that renders prefixes stably
(checked, with a clear error when a template does not).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from steerable.config.schema import DataConfig
from steerable.errors import UserError

IGNORE_INDEX = -100
log = logging.getLogger(__name__)


class TemplateError(UserError, ValueError):
    """The chat template does not render prefixes of a conversation as prefixes of its tokens."""


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]

    @property
    def num_target_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def _render(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict], add_generation_prompt: bool
) -> list[int]:
    ids = tokenizer.apply_chat_template(
        list(messages), add_generation_prompt=add_generation_prompt, tokenize=True
    )
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)


def end_of_turn_id(tokenizer: PreTrainedTokenizerBase, end_of_turn: str | None = None) -> int:
    token = end_of_turn or tokenizer.eos_token
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise TemplateError(
            f"end-of-turn token {token!r} is not in the tokenizer's vocabulary (model.end_of_turn)"
        )
    return int(token_id)


def prefix_length(tokenizer: PreTrainedTokenizerBase, reply: Sequence[int], prefix: str) -> int:
    """Tokens of `reply` up to the end of `prefix` (a conditioning string at the start of the content).

    Found as a token subsequence, so a template that writes something between the header and the content
    still works; a prefix that tokenizes differently inside the reply is an error, never a silent shift."""
    wanted = tokenizer.encode(prefix, add_special_tokens=False)
    for start in range(len(reply) - len(wanted) + 1):
        if list(reply[start : start + len(wanted)]) == wanted:
            return start + len(wanted)
    raise TemplateError(
        f"the conditioning prefix {prefix!r} does not tokenize the same inside the reply; "
        "its loss mask cannot be placed exactly (end the prefix with a newline)"
    )


def tokenize_conversation(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[dict],
    eot_id: int,
    no_loss_prefixes: dict[int, str] | None = None,
) -> TokenizedExample:
    """Token ids of the whole conversation, labels on assistant content + end-of-turn token only.

    `no_loss_prefixes[i]` is text at the start of message i's content that conditions the reply but is not
    learned (SteerLM's attribute label): its tokens get label -100 like the header."""
    input_ids: list[int] = []
    labels: list[int] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], add_generation_prompt=True)
        through = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if through[: len(before)] != before or before[: len(input_ids)] != input_ids:
            raise TemplateError(
                "the chat template does not render conversation prefixes stably; "
                "loss masks cannot be derived for this tokenizer"
            )
        reply = through[len(before) :]
        prefix = (no_loss_prefixes or {}).get(i)
        skip = prefix_length(tokenizer, reply, prefix) if prefix else 0
        if eot_id in reply[skip:]:
            cut = reply.index(eot_id, skip) + 1  # keep the end-of-turn token: the model must learn to stop
            target, trailer = reply[:cut], reply[cut:]
        else:
            target, trailer = reply, []
        input_ids += before[len(input_ids) :]
        labels += [IGNORE_INDEX] * (len(before) - len(labels))
        input_ids += target + trailer
        labels += [IGNORE_INDEX] * skip + target[skip:] + [IGNORE_INDEX] * len(trailer)
    return TokenizedExample(input_ids=input_ids, labels=labels)


def tokenize_prompt(tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict]) -> list[int]:
    return _render(tokenizer, messages, add_generation_prompt=True)


@dataclass
class LengthPolicyStats:
    kept: int = 0
    truncated: int = 0
    dropped_too_long: int = 0
    dropped_no_target: int = 0
    examples: list[str] = field(default_factory=list)


def fit_length(
    example: TokenizedExample, max_length: int, policy: str, stats: LengthPolicyStats
) -> TokenizedExample | None:
    """Apply the too-long policy; drop anything left without target tokens (it would give a NaN loss)."""
    if len(example.input_ids) > max_length:
        if policy == "drop":
            stats.dropped_too_long += 1
            return None
        example = TokenizedExample(example.input_ids[:max_length], example.labels[:max_length])
        stats.truncated += 1
    if example.num_target_tokens == 0:
        stats.dropped_no_target += 1
        return None
    stats.kept += 1
    return example


# No token of a real vocabulary spans more characters than this, so a message clipped at max_length times it
# still yields more than max_length tokens and truncation keeps the same tokens, without tokenising a
# multi-megabyte line whole first.
MAX_CHARS_PER_TOKEN = 64


def clipped(messages: Sequence[dict], limit: int) -> Sequence[dict]:
    if all(len(m.get("content") or "") <= limit for m in messages):
        return messages
    return [{**m, "content": (m.get("content") or "")[:limit]} for m in messages]


def tokenize_dataset(
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Sequence[dict]],
    max_length: int,
    policy: str,
    eot_id: int,
    no_loss_prefixes: Sequence[dict[int, str]] | None = None,
) -> tuple[list[TokenizedExample], LengthPolicyStats]:
    stats = LengthPolicyStats()
    kept = []
    prefixes = no_loss_prefixes or [{}] * len(conversations)
    for messages, prefix in zip(conversations, prefixes, strict=True):
        messages = clipped(messages, max_length * MAX_CHARS_PER_TOKEN)
        example = tokenize_conversation(tokenizer, messages, eot_id, prefix)
        fitted = fit_length(example, max_length, policy, stats)
        if fitted is not None:
            kept.append(fitted)
    if stats.truncated or stats.dropped_too_long or stats.dropped_no_target:
        log.warning(
            "length policy %s (max_length=%d): %d kept, %d truncated, %d dropped as too long, %d dropped without "
            "assistant tokens",
            policy,
            max_length,
            stats.kept,
            stats.truncated,
            stats.dropped_too_long,
            stats.dropped_no_target,
        )
    return kept, stats


@dataclass
class TokenizedSet:
    """Loss-masked examples and what the length policy did to get them."""

    examples: list[TokenizedExample]
    stats: LengthPolicyStats


def tokenize_messages(
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Sequence[dict]],
    data: DataConfig,
    end_of_turn: str | None = None,
    no_loss_prefixes: Sequence[dict[int, str]] | None = None,
) -> TokenizedSet:
    """`tokenize_dataset` under a data config's length policy (data.max_length, data.too_long)."""
    eot = end_of_turn_id(tokenizer, end_of_turn)
    examples, stats = tokenize_dataset(
        tokenizer, conversations, data.max_length, data.too_long.value, eot, no_loss_prefixes
    )
    return TokenizedSet(examples, stats)


class PaddingCollator:
    """Right-pads a batch for teacher-forced training; padded positions get label -100 and mask 0."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, batch: Sequence[TokenizedExample]) -> dict[str, torch.Tensor]:
        width = max(len(ex.input_ids) for ex in batch)
        input_ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ex in enumerate(batch):
            n = len(ex.input_ids)
            input_ids[row, :n] = torch.tensor(ex.input_ids)
            labels[row, :n] = torch.tensor(ex.labels)
            attention_mask[row, :n] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def pad_rows(
    rows: Sequence[Sequence[int]], pad_id: int, side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows padded to one width, with their attention mask: right for scoring and training, left for
    generation (the next token follows the last real one). Done by hand so a shared tokenizer's
    `padding_side` is never touched."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        if row:
            span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
            ids[i, span] = torch.tensor(row, dtype=torch.long)
            mask[i, span] = 1
    return ids, mask
