"""The prompt sets online methods sample from and reports generate on: one builder, its options explicit.

Every set is the distinct contexts of a split's records (OASST threads share contexts) whose rendered prompt
fits in a token budget (room left for the reply within data.max_length), in record order. What differs
between methods is stated by the caller: a system prompt / first-turn rewrite, how many training prompts
are kept, and what stands in for an empty held-out split.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from steerable.config.schema import ConfigError, DataConfig
from steerable.data.loaders import load_records, split_records
from steerable.data.records import Messages, prompt_of
from steerable.data.tokenize import tokenize_prompt

PromptTransform = Callable[[Messages], Messages]

# `held_out_fallback=ALL`: every training prompt stands in for an empty held-out split.
ALL = sys.maxsize


@dataclass(frozen=True)
class SystemPrompt:
    """Rewrite a context as SuperHF samples it: optionally just up to the first user turn (HH, as the paper),
    behind `text` as the system message (which then replaces the record's own)."""

    text: str | None
    first_turn_only: bool = False

    def __call__(self, messages: Messages) -> Messages:
        kept = [m for m in messages if m["role"] != "system" or not self.text]
        if self.first_turn_only:
            first_user = next(i for i, m in enumerate(kept) if m["role"] == "user")
            kept = kept[: first_user + 1]
        return ([{"role": "system", "content": self.text}] if self.text else []) + kept


def fitting_prompts(
    records: Iterable,
    tokenizer: PreTrainedTokenizerBase,
    budget: int,
    limit: int | None = None,
    transform: PromptTransform | None = None,
) -> list[Messages]:
    """The first `limit` (None: all) distinct contexts of `records`, after `transform`, whose prompt fits in
    `budget` tokens. Lazy: tokenising stops once `limit` prompts are found."""
    contexts = map(prompt_of, records)
    if transform is not None:
        contexts = map(transform, contexts)
    seen: set[str] = set()

    def first_time(prompt: Messages) -> bool:
        key = repr(prompt)
        if key in seen:
            return False
        seen.add(key)
        return True

    fitting = (p for p in contexts if first_time(p) and len(tokenize_prompt(tokenizer, p)) <= budget)
    return list(itertools.islice(fitting, limit))


@dataclass(frozen=True)
class HeldOut:
    """Which held-out prompts to keep: the first `limit` (None: all) and, when none fits, the last `fallback`
    of all training prompts standing in (0: none, the held-out set stays empty; `ALL`: every training
    prompt), cut to `limit`."""

    limit: int | None = None
    fallback: int = 0


def prompt_sets(
    data: DataConfig,
    tokenizer: PreTrainedTokenizerBase,
    budget: int,
    *,
    transform: PromptTransform | None = None,
    limit: int | None = None,
    held_out: HeldOut | None = None,
    required: bool = False,
) -> tuple[list[Messages], list[Messages]]:
    """(training prompts, held-out prompts) of `data`'s train/held-out split.

    - `limit`: keep the first N training prompts (None: all); `held_out`: which held-out prompts (`HeldOut`).
    - `required`: a data set without a single fitting training prompt is a configuration error.
    """
    rule = held_out or HeldOut()
    train_records, held_out_records = split_records(load_records(data), data)
    train = fitting_prompts(train_records, tokenizer, budget, limit, transform)
    if required and not train:
        raise ConfigError(
            f"no prompt of data={data.name} fits in {budget} tokens "
            "(data.max_length minus the reply's max_new_tokens)"
        )
    kept = fitting_prompts(held_out_records, tokenizer, budget, rule.limit, transform)
    if not kept and rule.fallback:
        pool = train if limit is None else fitting_prompts(train_records, tokenizer, budget, None, transform)
        kept = pool[-rule.fallback :][: rule.limit]
    return train, kept
