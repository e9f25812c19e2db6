"""The one prompt-set builder: distinct contexts that fit a budget, in record order, with each method's options
(system-prompt rewrite, a training limit, what stands in for an empty held-out split) stated by the caller."""

from __future__ import annotations

import pytest

from steerable.backbone.loading import load_tokenizer
from steerable.config.schema import ConfigError, DataConfig
from steerable.data.loaders import load_records, split_records
from steerable.data.prompts import ALL, HeldOut, SystemPrompt, fitting_prompts, prompt_sets
from steerable.data.records import Conversation, Turn, prompt_of
from steerable.data.tokenize import tokenize_prompt
from tests.test_backbone import tiny_config

DEMO = DataConfig(name="demo", max_records=48, val_fraction=0.2)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(tiny_config())


def test_prompt_sets_are_the_distinct_fitting_contexts_of_each_split_in_order(tokenizer) -> None:
    train_records, held_records = split_records(load_records(DEMO), DEMO)
    budget = 80
    train, held_out = prompt_sets(DEMO, tokenizer, budget)
    for prompts, records in ((train, train_records), (held_out, held_records)):
        expected = []
        for prompt in map(prompt_of, records):
            if prompt not in expected and len(tokenize_prompt(tokenizer, prompt)) <= budget:
                expected.append(prompt)
        assert prompts == expected
    assert train and held_out
    first_two, _ = prompt_sets(DEMO, tokenizer, budget, limit=2)
    assert first_two == train[:2]


def test_held_out_fallback_and_required(tokenizer) -> None:
    no_split = DataConfig(name="demo", max_records=12, val_fraction=0.0)
    train, held_out = prompt_sets(no_split, tokenizer, 200)
    assert train and held_out == []
    assert prompt_sets(no_split, tokenizer, 200, held_out=HeldOut(fallback=ALL))[1] == train
    assert prompt_sets(no_split, tokenizer, 200, limit=1, held_out=HeldOut(fallback=2))[1] == train[-2:]
    assert prompt_sets(no_split, tokenizer, 200, held_out=HeldOut(1, ALL))[1] == train[:1]
    assert prompt_sets(no_split, tokenizer, 1) == ([], [])
    with pytest.raises(ConfigError, match="no prompt of data=demo fits in 1 tokens"):
        prompt_sets(no_split, tokenizer, 1, required=True)


def test_system_prompt_replaces_the_records_own_and_can_keep_the_first_turn_only(tokenizer) -> None:
    thread = Conversation(
        [
            Turn("system", "old"),
            Turn("user", "a"),
            Turn("assistant", "b"),
            Turn("user", "c"),
            Turn("assistant", "d"),
        ]
    )
    assert SystemPrompt("new", first_turn_only=True)(prompt_of(thread)) == [
        {"role": "system", "content": "new"},
        {"role": "user", "content": "a"},
    ]
    assert SystemPrompt(None)(prompt_of(thread)) == prompt_of(thread)
    rewritten = fitting_prompts([thread, thread], tokenizer, 500, transform=SystemPrompt("new", True))
    assert len(rewritten) == 1  # distinct after the rewrite
