"""Loss masks cover exactly the assistant tokens (content + end-of-turn), and the length policy never yields
an example without targets."""

from __future__ import annotations

import pytest

from steerable.backbone.tiny import build_tiny_tokenizer
from steerable.data.tokenize import (
    IGNORE_INDEX,
    LengthPolicyStats,
    PaddingCollator,
    TemplateError,
    end_of_turn_id,
    fit_length,
    tokenize_conversation,
    tokenize_dataset,
)

MULTI_TURN = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "yo"},
    {"role": "user", "content": "and?"},
    {"role": "assistant", "content": "ab c"},
]


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def test_mask_covers_exactly_assistant_content_and_end_of_turn(tok) -> None:
    ex = tokenize_conversation(tok, MULTI_TURN, end_of_turn_id(tok))
    text = tok.decode(ex.input_ids)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\nyo<|im_end|>\n<|im_start|>user\nand?<|im_end|>\n"
        "<|im_start|>assistant\nab c<|im_end|>\n"
    )
    # Byte-level tokenizer: one token per byte, so positions are exact character offsets of the rendering.
    first = text.index("assistant\nyo") + len("assistant\n")
    second = text.index("assistant\nab c") + len("assistant\n")

    def token_positions(char_start: int, length: int) -> list[int]:
        prefix_tokens = len(tok(text[:char_start], add_special_tokens=False).input_ids)
        return list(range(prefix_tokens, prefix_tokens + length))

    expected = token_positions(first, 2) + [token_positions(first, 3)[-1]]  # "yo" + <|im_end|>
    expected += token_positions(second, 4) + [token_positions(second, 5)[-1]]  # "ab c" + <|im_end|>
    target_positions = [i for i, label in enumerate(ex.labels) if label != IGNORE_INDEX]
    assert target_positions == expected
    assert [ex.labels[i] for i in target_positions] == [ex.input_ids[i] for i in target_positions]
    assert tok.decode([ex.input_ids[i] for i in target_positions]) == "yo<|im_end|>ab c<|im_end|>"


def test_no_assistant_turn_means_no_targets(tok) -> None:
    ex = tokenize_conversation(tok, MULTI_TURN[:2], end_of_turn_id(tok))
    assert ex.num_target_tokens == 0


def test_truncation_keeps_prefix_and_drops_target_less_examples(tok) -> None:
    ex = tokenize_conversation(tok, MULTI_TURN, end_of_turn_id(tok))
    stats = LengthPolicyStats()
    short = fit_length(ex, 20, "truncate", stats)  # cut inside the system prompt: no targets left
    assert short is None and stats.dropped_no_target == 1
    kept = fit_length(ex, len(ex.input_ids) - 3, "truncate", stats)
    assert kept is not None and kept.input_ids == ex.input_ids[: len(ex.input_ids) - 3]
    assert stats.truncated == 2
    assert fit_length(ex, len(ex.input_ids) - 1, "drop", stats) is None and stats.dropped_too_long == 1


def test_tokenize_dataset_counts_policy(tok) -> None:
    convs = [MULTI_TURN, MULTI_TURN[:3], MULTI_TURN[:2]]
    kept, stats = tokenize_dataset(tok, convs, max_length=512, policy="truncate", eot_id=end_of_turn_id(tok))
    assert len(kept) == 2 and stats.kept == 2 and stats.dropped_no_target == 1


def test_collator_pads_right_with_ignored_labels(tok) -> None:
    eot = end_of_turn_id(tok)
    a = tokenize_conversation(tok, MULTI_TURN, eot)
    b = tokenize_conversation(tok, MULTI_TURN[:3], eot)
    batch = PaddingCollator(tok.pad_token_id)([a, b])
    n = len(b.input_ids)
    assert batch["input_ids"].shape == (2, len(a.input_ids))
    assert batch["attention_mask"][1, :n].all() and not batch["attention_mask"][1, n:].any()
    assert (batch["labels"][1, n:] == IGNORE_INDEX).all()
    assert (batch["input_ids"][1, n:] == tok.pad_token_id).all()


def test_unknown_end_of_turn_token_is_a_clear_error(tok) -> None:
    with pytest.raises(TemplateError, match=r"model\.end_of_turn"):
        end_of_turn_id(tok, "<|not_a_token|>")


def test_a_huge_message_is_clipped_before_tokenising_with_the_same_result() -> None:
    from steerable.backbone.tiny import build_tiny_tokenizer
    from steerable.data.tokenize import clipped, tokenize_conversation, tokenize_dataset

    tokenizer = build_tiny_tokenizer()
    eot = tokenizer.eos_token_id
    huge = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "word " * 200_000}]]
    short = clipped(huge[0], 64 * 64)
    assert len(short[1]["content"]) == 64 * 64 and huge[0][1]["content"] != short[1]["content"]
    (from_huge,), stats = tokenize_dataset(tokenizer, huge, 64, "truncate", eot)
    assert stats.truncated == 1 and len(from_huge.input_ids) == 64
    whole = tokenize_conversation(tokenizer, huge[0], eot, {})  # the slow way: all 1M tokens, then truncate
    assert from_huge.input_ids == whole.input_ids[:64] and from_huge.labels == whole.labels[:64]
