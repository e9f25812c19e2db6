"""MODPO's training pairs: the target objective's chosen/rejected replies, every reply scored by every reward
source (the margin objectives' rewards are fixed functions of the text, so they are computed once here).

* Data with pairs (hh-rlhf, jsonl pairs, helpsteer2) whose own labels are the target: those pairs, as DPO reads
  them.
* Otherwise the target is a reward source: for each distinct prompt the data's replies to it (if any) and
  `sampled_replies` replies of the starting model are scored; the best and the worst by the target make the pair (ties give none).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import torch

from steerable.data.loaders import load_records, split_records
from steerable.data.records import Conversation, PreferencePair, Turn, prompt_of, user_text
from steerable.data.tokenize import MAX_CHARS_PER_TOKEN, LengthPolicyStats, fit_length
from steerable.generation import GenerationSettings
from steerable.methods.dpo.pairs import PairStats, TokenizedPair, split_pairs, tokenize_pair
from steerable.rewards.base import RewardStack

log = logging.getLogger(__name__)


@dataclass
class ScoredPair:
    """A pair and the reward-source scores of both replies (name -> score)."""

    context: list[dict[str, str]]
    chosen: str
    rejected: str
    chosen_scores: dict[str, float]
    rejected_scores: dict[str, float]

    @property
    def pair(self) -> PreferencePair:
        turns = [Turn(m["role"], m["content"]) for m in self.context]
        return PreferencePair(context=turns, chosen=self.chosen, rejected=self.rejected)

    def margins(self, names: list[str]) -> tuple[list[float], list[float]]:
        return [self.chosen_scores[n] for n in names], [self.rejected_scores[n] for n in names]


def score_pairs(pairs: list[PreferencePair], stack: RewardStack) -> list[ScoredPair]:
    """The data's own pairs with both replies scored by every source."""
    prompts = [user_text(p.prompt_messages) for p in pairs]
    chosen = stack.score(prompts, [p.chosen for p in pairs])
    rejected = stack.score(prompts, [p.rejected for p in pairs])
    return [
        ScoredPair(p.prompt_messages, p.chosen, p.rejected, _named(stack, c), _named(stack, r))
        for p, c, r in zip(pairs, chosen, rejected, strict=True)
    ]


def _named(stack: RewardStack, row: torch.Tensor) -> dict[str, float]:
    return dict(zip(stack.names, (float(v) for v in row), strict=True))


def ranked_pairs(
    contexts: list[list[dict]], candidates: list[list[str]], stack: RewardStack, target: str
) -> list[ScoredPair]:
    """Per prompt, the best and the worst candidate reply by the target source; prompts whose candidates tie
    (or that have fewer than two) give no pair."""
    out = []
    column = stack.index(target)
    for context, replies in zip(contexts, candidates, strict=True):
        replies = [r for r in replies if r.strip()]
        if len(replies) < 2:
            continue
        scores = stack.score([user_text(context)] * len(replies), replies)
        best, worst = int(scores[:, column].argmax()), int(scores[:, column].argmin())
        if scores[best, column] == scores[worst, column]:
            continue
        out.append(
            ScoredPair(
                context,
                replies[best],
                replies[worst],
                _named(stack, scores[best]),
                _named(stack, scores[worst]),
            )
        )
    return out


def candidate_replies(
    records: list[Any], sampler: Any, settings: GenerationSettings | None
) -> tuple[list[list[dict]], list[list[str]]]:
    """(contexts, candidate replies) per distinct prompt: every reply the data gives that prompt (data that
    answers one question several ways gives pairs without sampling), then the
    sampled ones."""
    groups: dict[str, tuple[list[dict], list[str]]] = {}
    for record in records:
        context = prompt_of(record)
        groups.setdefault(json.dumps(context, sort_keys=True), (context, []))[1].extend(own_replies(record))
    contexts = [context for context, _ in groups.values()]
    candidates = [list(replies) for _, replies in groups.values()]
    if settings is not None and contexts:
        for completion in sampler.generate(contexts, settings):
            candidates[completion.prompt_index].append(completion.text)
    return contexts, candidates


def own_replies(record: Any) -> list[str]:
    """The replies a record brings: a pair's two, a conversation's last assistant turn, none for a prompt."""
    if isinstance(record, PreferencePair):
        return [record.chosen, record.rejected]
    if isinstance(record, Conversation) and record.turns[-1].role == "assistant":
        return [record.turns[-1].content]
    return []


def split_sources(data: Any, has_pairs: bool) -> tuple[list, list]:
    """Training and held-out records: preference pairs when the data has them, else conversations/prompts."""
    return split_pairs(data) if has_pairs else split_records(load_records(data), data)


# ------------------------------------------------------------------------------------------- tokenizing


@dataclass
class MarginPair:
    """A tokenized pair and the margin objectives' rewards of its two replies."""

    tokens: TokenizedPair
    chosen_margin: list[float]
    rejected_margin: list[float]


def tokenize_scored(
    tokenizer: Any, pairs: list[ScoredPair], margin_names: list[str], max_length: int, policy: str, eot: int
) -> tuple[list[MarginPair], PairStats]:
    """DPO's length rules (steerable/methods/dpo/pairs.py), keeping each kept pair's margins beside it."""
    stats, kept = PairStats(), []
    for scored in pairs:
        full = tokenize_pair(tokenizer, scored.pair, eot, max_length * MAX_CHARS_PER_TOKEN)
        side_stats = LengthPolicyStats()
        sides = [fit_length(s, max_length, policy, side_stats) for s in (full.chosen, full.rejected)]
        if sides[0] is None or sides[1] is None:
            stats.dropped += 1
        elif sides[0].input_ids == sides[1].input_ids:
            stats.identical += 1
        else:
            stats.kept += 1
            stats.truncated += int(side_stats.truncated > 0)
            kept.append(MarginPair(TokenizedPair(*sides), *scored.margins(margin_names)))
    if stats.dropped or stats.identical:
        log.warning(
            "%d of %d pairs left out at data.max_length=%d",
            stats.dropped + stats.identical,
            len(pairs),
            max_length,
        )
    return kept, stats
