"""The reward and attribute models' training rows: tokenized preference pairs, and replies labelled with
attribute values (an unlabelled attribute is MISSING_LABEL, masked out of the loss)."""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from steerable.data.records import Conversation, PreferencePair
from steerable.data.tokenize import pad_rows
from steerable.rewards.scoring_model import render_scored

MISSING_LABEL = -100.0


# NeMo-Aligner's canonical attribute order (OASST + HelpSteer); other names follow alphabetically.
CANONICAL_ORDER = [
    "quality",
    "toxicity",
    "humor",
    "creativity",
    "violence",
    "helpfulness",
    "not_appropriate",
    "correctness",
    "coherence",
    "complexity",
    "verbosity",
]


def pair_examples(pairs: list[PreferencePair], tokenizer, max_length: int) -> list[dict[str, list[int]]]:
    return [
        {
            "chosen": render_scored(tokenizer, p.prompt_messages, p.chosen, max_length),
            "rejected": render_scored(tokenizer, p.prompt_messages, p.rejected, max_length),
        }
        for p in pairs
    ]


def collate_pairs(pad_id: int):
    def collate(batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        ids, mask = pad_rows([b["chosen"] for b in batch] + [b["rejected"] for b in batch], pad_id)
        return {"input_ids": ids, "attention_mask": mask}

    return collate


def attribute_names(conversations: list[Conversation], requested: list[str]) -> list[str]:
    if requested:
        return list(requested)
    found = {name for c in conversations for t in c.turns if t.role == "assistant" for name in t.attributes}
    if not found:
        raise ValueError("method=attribute_model found no attribute labels in the data")
    known = [n for n in CANONICAL_ORDER if n in found]
    return known + sorted(found - set(known))


def labelled_replies(
    conversations: list[Conversation], names: list[str]
) -> list[tuple[list[dict], str, list[float]]]:
    """One sample per labelled assistant turn (context, reply, labels with -100 for missing), deduplicated:
    OASST threads of one tree share their prefixes, so the same reply appears in several threads."""
    seen: set[str] = set()
    samples = []
    for conv in conversations:
        for i, turn in enumerate(conv.turns):
            if turn.role != "assistant" or not any(n in turn.attributes for n in names):
                continue
            context = [t.as_message() for t in conv.turns[:i]]
            key = hashlib.sha1(repr((context, turn.content)).encode()).hexdigest()
            if key in seen:
                continue
            seen.add(key)
            labels = [float(turn.attributes[n]) if n in turn.attributes else MISSING_LABEL for n in names]
            samples.append((context, turn.content, labels))
    return samples


def label_examples(samples, tokenizer, max_length: int) -> list[dict[str, Any]]:
    return [{"ids": render_scored(tokenizer, c, r, max_length), "labels": labels} for c, r, labels in samples]


def collate_labels(pad_id: int):
    def collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids, mask = pad_rows([b["ids"] for b in batch], pad_id)
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": torch.tensor([b["labels"] for b in batch]),
        }

    return collate
