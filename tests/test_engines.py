"""The `Sampler` contract, run for every generation engine available here.

Engines: `hf` (transformers generate, no speed-ups: the reference), `hf-fast` (LoRA merged for sampling and
one prefill per prompt shared by its n samples) and `vllm` (skipped with a reason where vLLM is not
installed). The model is a tiny random Llama with a head size vLLM's CPU attention supports (32) and a
LoRA adapter whose B matrices are non-zero, so the adapter changes what is generated.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from steerable.backbone.adapters import merged_adapter, reference_policy, single_active_adapter, wrap_lora
from steerable.backbone.mixing import AdapterMixer
from steerable.backbone.tiny import build_tiny_model, build_tiny_tokenizer
from steerable.config.schema import ConfigError, GenerationConfig, LoraConfig, TinyModelConfig
from steerable.generation import GenerationSettings, HFSampler, make_sampler

HAS_VLLM = importlib.util.find_spec("vllm") is not None
NO_VLLM = pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed here")
ENGINES = [
    "hf-fast",
    pytest.param("vllm", marks=NO_VLLM),  # on CPU: LoRA merged into the engine's weights after each update
    pytest.param("vllm-adapter", marks=NO_VLLM),  # LoRA served as adapter versions (the GPU default)
]
PROMPTS = [
    [{"role": "user", "content": "hello there"}],
    [{"role": "user", "content": "how are you today? tell me more"}],
    "a plain text prompt",
]
SHAPE = TinyModelConfig(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, intermediate_size=256)


def lora_model(seed: int = 0):
    tokenizer = build_tiny_tokenizer()
    model = wrap_lora(
        build_tiny_model(SHAPE, tokenizer),
        LoraConfig(r=8, alpha=16, dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
    )
    nudge(model, seed)
    return model, tokenizer


def nudge(model, seed: int) -> None:
    """Move every LoRA B matrix (an optimizer step would): the adapter now changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.add_(torch.randn(param.shape, generator=generator) * 0.08)


def engine(name: str, model, tokenizer, end_of_turn: str | None = None):
    if name == "hf-fast":
        return make_sampler(model, tokenizer, end_of_turn, GenerationConfig())
    config = GenerationConfig(engine="vllm", vllm_merge_lora=name == "vllm")
    return make_sampler(model, tokenizer, end_of_turn, config)


def reference(model, tokenizer, end_of_turn: str | None = None) -> HFSampler:
    return HFSampler(model, tokenizer, end_of_turn)


def assert_same(got, want, atol: float = 1e-4) -> None:
    assert [c.prompt_index for c in got] == [c.prompt_index for c in want]
    for g, w in zip(got, want, strict=True):
        assert g.token_ids == w.token_ids
        assert g.finish_reason == w.finish_reason
        assert g.text == w.text
        assert g.prompt_token_ids == w.prompt_token_ids
        assert torch.allclose(g.logprobs, w.logprobs, atol=atol), (g.logprobs - w.logprobs).abs().max()


GREEDY = GenerationSettings(max_new_tokens=12, do_sample=False, num_return_sequences=2, batch_size=2)


@pytest.mark.parametrize("name", ENGINES)
def test_greedy_output_and_logprobs_equal_the_reference(name):
    model, tokenizer = lora_model()
    got = engine(name, model, tokenizer).generate(PROMPTS, GREEDY)
    assert len(got) == len(PROMPTS) * 2
    assert_same(got, reference(model, tokenizer).generate(PROMPTS, GREEDY))
    for c in got:
        assert c.text == tokenizer.decode(c.token_ids, skip_special_tokens=True)
        assert c.logprobs.dtype == torch.float32 and (c.logprobs <= 0).all()


@pytest.mark.parametrize("name", ENGINES)
def test_after_an_update_the_engine_follows_the_policy(name):
    model, tokenizer = lora_model()
    sampler = engine(name, model, tokenizer)
    before = sampler.generate(PROMPTS, GREEDY)
    nudge(model, seed=1)
    after = sampler.generate(PROMPTS, GREEDY)
    assert [c.token_ids for c in after] != [c.token_ids for c in before]  # the update reached the engine
    assert_same(after, reference(model, tokenizer).generate(PROMPTS, GREEDY))


@pytest.mark.parametrize("name", ENGINES)
def test_reference_policy_generates_without_the_adapter(name):
    model, tokenizer = lora_model()
    with reference_policy(model):
        got = engine(name, model, tokenizer).generate(PROMPTS, GREEDY)
        want = reference(model, tokenizer).generate(PROMPTS, GREEDY)
    assert_same(got, want)
    adapted = reference(model, tokenizer).generate(PROMPTS, GREEDY)
    assert [c.token_ids for c in adapted] != [c.token_ids for c in got]


@pytest.mark.parametrize("name", ENGINES)
def test_seeded_sampling_repeats_and_groups_by_prompt(name):
    model, tokenizer = lora_model()
    settings = GenerationSettings(
        max_new_tokens=10, do_sample=True, temperature=1.0, top_p=0.9, num_return_sequences=3, seed=7
    )
    sampler = engine(name, model, tokenizer)
    first, second = sampler.generate(PROMPTS, settings), sampler.generate(PROMPTS, settings)
    assert [c.token_ids for c in first] == [c.token_ids for c in second]
    assert [c.prompt_index for c in first] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert len({tuple(c.token_ids) for c in first[:3]}) > 1  # n samples, not one repeated


@pytest.mark.parametrize("name", ENGINES)
def test_end_of_turn_is_kept_and_stop_strings_cut(name):
    model, tokenizer = lora_model()
    greedy = reference(model, tokenizer).generate(PROMPTS[:1], GREEDY)[0]
    end_token = tokenizer.convert_ids_to_tokens(greedy.token_ids[3])  # the 4th token ends the turn
    got = engine(name, model, tokenizer, end_of_turn=end_token).generate(PROMPTS[:1], GREEDY)[0]
    end_id = tokenizer.convert_tokens_to_ids(end_token)
    assert got.finish_reason == "eos" and got.token_ids[-1] == end_id
    assert got.token_ids == greedy.token_ids[: greedy.token_ids.index(end_id) + 1]

    stop = greedy.text[4:6]
    settings = GenerationSettings(max_new_tokens=12, do_sample=False, stop=[stop])
    cut = engine(name, model, tokenizer).generate(PROMPTS[:1], settings)[0]
    assert cut.finish_reason == "stop" and stop not in cut.text
    assert cut.text == tokenizer.decode(cut.token_ids, skip_special_tokens=True)
    assert greedy.text.startswith(cut.text)


def test_merging_restores_the_base_weights_bit_for_bit():
    model, _ = lora_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.randint(0, 200, (2, 7))
    with torch.no_grad():
        unmerged = model(input_ids=x).logits
        with merged_adapter(model) as merged:
            assert merged
            merged_logits = model(input_ids=x).logits
    assert torch.allclose(merged_logits, unmerged, atol=1e-5)
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name
    with torch.no_grad():
        assert torch.equal(model(input_ids=x).logits, unmerged)  # PEFT's bookkeeping is back too


def test_merging_is_skipped_where_it_would_change_the_model():
    model, _ = lora_model()
    assert single_active_adapter(model) == "default"
    with reference_policy(model):
        assert single_active_adapter(model) is None  # adapters off: the reference policy
    mixer = AdapterMixer(model, ["default"])  # per-example weights on the adapter's output
    assert single_active_adapter(model) is None
    with merged_adapter(model) as merged:
        assert not merged
    mixer.remove()
    assert single_active_adapter(model) == "default"


def test_vllm_without_the_package_is_a_one_line_error_with_the_install_command(monkeypatch):
    import steerable.config.generation as generation

    monkeypatch.setattr(generation, "vllm_installed", lambda: False)
    with pytest.raises(ConfigError) as err:
        GenerationConfig(engine="vllm")
    message = str(err.value)
    assert "\n" not in message and 'pip install -e ".[vllm]"' in message and "generation.engine" in message


@pytest.mark.parametrize("name", ENGINES)
def test_many_long_seeded_prompts_in_one_call(name):
    """More prompt tokens than one engine step takes (vLLM 0.32 split such prefills and then failed on
    seeded CPU generators): every prompt still gets its n replies, in order, reproducibly."""
    model, tokenizer = lora_model()
    prompts = [[{"role": "user", "content": f"prompt {i} " + "x" * 300}] for i in range(40)]
    settings = GenerationSettings(max_new_tokens=4, do_sample=True, num_return_sequences=4, seed=3)
    sampler = engine(name, model, tokenizer)
    first = sampler.generate(prompts, settings)
    assert [c.prompt_index for c in first] == [i for i in range(40) for _ in range(4)]
    assert [c.token_ids for c in first] == [c.token_ids for c in sampler.generate(prompts, settings)]


@pytest.mark.parametrize("name", ENGINES)
def test_full_fine_tuning_updates_reach_the_engine(name):
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(SHAPE, tokenizer)  # no adapters: every weight trains
    sampler = engine(name, model, tokenizer)
    before = sampler.generate(PROMPTS, GREEDY)
    with torch.no_grad():
        for param in model.model.layers[0].parameters():
            param.add_(torch.randn_like(param) * 0.2)  # an optimizer step, in place
    after = sampler.generate(PROMPTS, GREEDY)
    assert [c.token_ids for c in after] != [c.token_ids for c in before]
    assert_same(after, reference(model, tokenizer).generate(PROMPTS, GREEDY))
