"""The HF sampler on the tiny random Llama: padding, stop strings, log-probs, seeds, chat rendering."""

from __future__ import annotations

import pytest
import torch

from steerable.backbone.tiny import build_tiny_model, build_tiny_tokenizer
from steerable.config.schema import ConfigError, TinyModelConfig
from steerable.generation import (
    Completion,
    GenerationSettings,
    HFSampler,
    cut_response,
    pack_completions,
    sequence_logprobs,
)

# Untied embeddings: a tied random model just repeats its last input byte, which tests nothing.
SHAPE = TinyModelConfig(tie_word_embeddings=False)
PROMPTS: list = [
    "Hello there",
    "a",
    "The quick brown fox jumps over",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_tiny_model(SHAPE, tokenizer, seed=0)


@pytest.fixture(scope="module")
def sampler(model, tokenizer) -> HFSampler:
    return HFSampler(model, tokenizer)


def greedy(max_new_tokens: int = 16, **kw) -> GenerationSettings:
    return GenerationSettings(max_new_tokens=max_new_tokens, do_sample=False, **kw)


def assert_logprobs_match_teacher_forcing(model, completions: list[Completion], pad_id: int) -> None:
    input_ids, attention_mask, response_mask = pack_completions(completions, pad_id)
    with torch.no_grad():
        recomputed = sequence_logprobs(model.eval(), input_ids, attention_mask, response_mask)
    returned = torch.cat([c.logprobs for c in completions])
    torch.testing.assert_close(recomputed[response_mask.bool()], returned, atol=1e-4, rtol=0)
    assert (recomputed[~response_mask.bool()] == 0).all()
    assert (returned <= 0).all()


# ----------------------------------------------------------------------------------------- batching


def test_batched_greedy_equals_one_at_a_time(sampler: HFSampler) -> None:
    batched = sampler.generate(PROMPTS, greedy(batch_size=3))
    assert [c.prompt_index for c in batched] == list(range(len(PROMPTS)))  # input order despite sorting
    for i, prompt in enumerate(PROMPTS):
        (alone,) = sampler.generate([prompt], greedy(batch_size=1))
        assert batched[i].token_ids == alone.token_ids
        assert batched[i].text == alone.text
        assert batched[i].finish_reason == alone.finish_reason
        torch.testing.assert_close(batched[i].logprobs, alone.logprobs, atol=1e-4, rtol=0)


def test_text_is_decoded_token_ids(sampler: HFSampler, tokenizer) -> None:
    for c in sampler.generate(PROMPTS, greedy()):
        assert c.text == tokenizer.decode(c.token_ids, skip_special_tokens=True)
        assert len(c.logprobs) == len(c.token_ids)


# -------------------------------------------------------------------------------------- stopping


def ascii_window(token_ids: list[int], tokenizer, start: int = 3, width: int = 2) -> int:
    """First index >= start where `width` tokens decode to printable ASCII (one byte per token)."""
    for i in range(start, len(token_ids) - width):
        piece = tokenizer.decode(token_ids[i : i + width])
        if len(piece) == width and all(32 <= ord(ch) < 127 for ch in piece):
            return i
    raise AssertionError("greedy output has no ASCII window; pick another prompt")


def test_stop_string_cuts_text_and_tokens(sampler: HFSampler, tokenizer) -> None:
    prompt = PROMPTS[2]
    (full,) = sampler.generate([prompt], greedy(max_new_tokens=40))
    i = ascii_window(full.token_ids, tokenizer)
    stop = tokenizer.decode(full.token_ids[i : i + 2])
    # The stop string may occur earlier than i too; the cut is at its first occurrence.
    first = next(
        j for j in range(len(full.token_ids)) if full.token_ids[j : j + 2] == full.token_ids[i : i + 2]
    )
    (cut,) = sampler.generate([prompt], greedy(max_new_tokens=40, stop=["never-seen", stop]))
    assert cut.finish_reason == "stop"
    assert cut.token_ids == full.token_ids[:first]
    assert cut.text == tokenizer.decode(full.token_ids[:first])
    assert stop not in cut.text
    assert full.text.startswith(cut.text)
    torch.testing.assert_close(cut.logprobs, full.logprobs[:first])


def test_max_new_tokens_gives_length(sampler: HFSampler) -> None:
    for c in sampler.generate(PROMPTS[:3], greedy(max_new_tokens=7)):
        assert c.finish_reason == "length"
        assert len(c.token_ids) == 7


def test_end_of_turn_token_is_kept_and_hidden(model, tokenizer, sampler: HFSampler) -> None:
    (full,) = sampler.generate([PROMPTS[0]], greedy(max_new_tokens=12))
    eot_id = full.token_ids[4]
    first = full.token_ids.index(eot_id)
    eot_sampler = HFSampler(model, tokenizer, end_of_turn=tokenizer.convert_ids_to_tokens(eot_id))
    (c,) = eot_sampler.generate([PROMPTS[0]], greedy(max_new_tokens=12))
    assert c.finish_reason == "eos"
    assert c.token_ids == full.token_ids[: first + 1]
    assert c.text == tokenizer.decode(full.token_ids[:first])


def test_cut_on_token_boundary_when_a_token_straddles_the_stop() -> None:
    pieces = {1: "ab", 2: "c#", 3: "#d", 4: "e", 9: "", 0: ""}

    def decode(ids) -> str:
        return "".join(pieces[i] for i in ids)

    cut = cut_response([1, 2, 3, 4, 0, 0], decode, end_ids={9}, pad_id=0, stop=["##"])
    assert (cut.num_tokens, cut.text, cut.finish_reason) == (1, "ab", "stop")  # "c" goes with "c#"


def test_cut_eos_padding_and_stop_precedence() -> None:
    def decode(ids) -> str:
        return "".join(chr(96 + i) for i in ids if i not in (0, 9))  # 1 -> "a", 0 pad, 9 eos

    assert cut_response([1, 2, 9, 0, 0], decode, {9}, 0) == cut_response([1, 2, 9], decode, {9}, 0)
    eos = cut_response([1, 2, 9, 0], decode, {9}, 0)
    assert (eos.num_tokens, eos.text, eos.finish_reason) == (3, "ab", "eos")
    padded = cut_response([1, 2, 0, 0], decode, {9}, 0)
    assert (padded.num_tokens, padded.finish_reason) == (2, "length")
    stop_first = cut_response([1, 2, 3, 9], decode, {9}, 0, stop=["bc"])
    assert (stop_first.num_tokens, stop_first.text, stop_first.finish_reason) == (1, "a", "stop")
    after_eos = cut_response([1, 9, 2, 3], decode, {9}, 0, stop=["bc"])
    assert after_eos.finish_reason == "eos"


# -------------------------------------------------------------------------------------- log-probs


def test_greedy_logprobs_match_sequence_logprobs(model, tokenizer, sampler: HFSampler) -> None:
    completions = sampler.generate(PROMPTS, greedy(max_new_tokens=20, batch_size=4))
    assert_logprobs_match_teacher_forcing(model, completions, tokenizer.pad_token_id)


def test_sequence_logprobs_score_only_from_the_first_response_column(model, tokenizer, sampler) -> None:
    """The output layer runs on the scored columns only, and the values are those of the full logits."""
    longer = [p for p in PROMPTS if p != "a"]  # prompts of several tokens, so there are columns to skip
    completions = sampler.generate(longer, greedy(max_new_tokens=8, batch_size=4))
    input_ids, attention_mask, response_mask = pack_completions(completions, tokenizer.pad_token_id)
    start = min(len(c.prompt_token_ids) for c in completions)
    assert int(response_mask.bool().any(dim=0).nonzero()[0]) == start > 1
    seen: list[int] = []
    hook = model.lm_head.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
    try:
        with torch.no_grad():
            fast = sequence_logprobs(model.eval(), input_ids, attention_mask, response_mask)
    finally:
        hook.remove()
    assert seen == [input_ids.shape[1] - start + 1]
    with torch.no_grad():
        full = model(input_ids=input_ids, attention_mask=attention_mask).logits.float().log_softmax(-1)
    expected = full[:, :-1].gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    expected = torch.nn.functional.pad(expected, (1, 0)) * response_mask
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=0)


def test_sampled_logprobs_use_raw_logits(model, tokenizer, sampler: HFSampler) -> None:
    """Temperature and top-k shape the sampling, never the reported log-probs."""
    settings = GenerationSettings(
        max_new_tokens=12, do_sample=True, temperature=0.5, top_k=20, top_p=0.9, seed=3, batch_size=2
    )
    completions = sampler.generate(PROMPTS, settings)
    assert_logprobs_match_teacher_forcing(model, completions, tokenizer.pad_token_id)


# --------------------------------------------------------------------------------- seeds and counts


def test_seeded_sampling_is_reproducible_and_leaves_global_rng(sampler: HFSampler) -> None:
    settings = GenerationSettings(max_new_tokens=10, do_sample=True, seed=7, num_return_sequences=3)
    state = torch.get_rng_state()
    first = sampler.generate(PROMPTS[:2], settings)
    assert torch.equal(torch.get_rng_state(), state)
    second = sampler.generate(PROMPTS[:2], settings)
    assert [c.token_ids for c in first] == [c.token_ids for c in second]
    assert [c.prompt_index for c in first] == [0, 0, 0, 1, 1, 1]
    assert len({tuple(c.token_ids) for c in first[:3]}) > 1  # samples within a prompt differ
    other = sampler.generate(PROMPTS[:2], GenerationSettings(max_new_tokens=10, do_sample=True, seed=8))
    assert other[0].token_ids != first[0].token_ids


def test_greedy_with_several_returns_gives_copies(sampler: HFSampler) -> None:
    out = sampler.generate(PROMPTS[:2], greedy(max_new_tokens=6, num_return_sequences=2))
    assert [c.prompt_index for c in out] == [0, 0, 1, 1]
    assert out[0].token_ids == out[1].token_ids


# --------------------------------------------------------------------------------- prompts and modes


def test_chat_messages_use_the_template(sampler: HFSampler, tokenizer) -> None:
    ids = sampler.encode(PROMPTS[3])
    rendered = tokenizer.decode(ids)
    assert rendered.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert rendered.endswith("<|im_start|>assistant\n")
    (c,) = sampler.generate([PROMPTS[3]], greedy(max_new_tokens=4))
    assert c.prompt_token_ids == ids
    assert (
        sampler.encode("plain <|im_start|>")
        == tokenizer("plain <|im_start|>", add_special_tokens=False)["input_ids"]
    )


def test_restores_modes_and_tokenizer(model, tokenizer, sampler: HFSampler) -> None:
    model.train()
    model.model.layers[0].eval()  # a mixed state must come back exactly
    side = tokenizer.padding_side
    sampler.generate(PROMPTS[:2], greedy(max_new_tokens=3))
    assert model.training and not model.model.layers[0].training and model.model.layers[1].training
    assert tokenizer.padding_side == side
    model.eval()


def test_peft_wrapped_model(tokenizer) -> None:
    peft = pytest.importorskip("peft")
    base = build_tiny_model(SHAPE, tokenizer, seed=0)
    (expected,) = HFSampler(base, tokenizer).generate([PROMPTS[0]], greedy(max_new_tokens=8))
    wrapped = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    (got,) = HFSampler(wrapped, tokenizer).generate([PROMPTS[0]], greedy(max_new_tokens=8))
    assert got.token_ids == expected.token_ids  # fresh LoRA is the identity


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError):
        GenerationSettings(do_sample=True, temperature=0.0)
    with pytest.raises(ConfigError):
        GenerationSettings(stop=[""])
    with pytest.raises(ConfigError):
        GenerationSettings(top_k=0)


def test_a_prompt_longer_than_the_positions_is_cut_from_the_left(model, tokenizer, caplog) -> None:
    """Prompt + reply stays inside max_position_embeddings: the prompt keeps its last tokens, says so, and
    transformers' over-length reminder never fires."""
    positions = model.config.max_position_embeddings
    long_prompt = "word " * (positions + 50)
    sampler = HFSampler(model, tokenizer)
    with caplog.at_level("WARNING"):
        [completion] = sampler.generate([long_prompt], greedy(max_new_tokens=8))
    room = positions - 8
    assert len(completion.prompt_token_ids) == room
    assert completion.prompt_token_ids == sampler.encode(long_prompt)[-room:]
    assert len(completion.prompt_token_ids) + len(completion.token_ids) <= positions
    messages = [r.getMessage() for r in caplog.records]
    assert any("1 of 1 prompts are longer" in m for m in messages), messages
    assert not any("friendly reminder" in m for m in messages), messages
