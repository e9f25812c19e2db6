"""Token-level mixtures of LoRA experts on one base: valid distributions, one-hot = that expert, the batched
replica forward equals separate per-adapter forwards, and mixture decoding with one-hot weights reproduces the
expert's own greedy decoding."""

from __future__ import annotations

import pytest
import torch

from steerable.backbone.mixing import AdapterMixer
from steerable.generation import GenerationSettings, HFSampler
from steerable.generation.mixture import MixtureSampler, mix_log_probs
from tests.test_clp import perturb, policy


def experts():
    model, mixer = policy("full", copies=3)
    for i in range(3):
        perturb(model, f"objective_{i}", 10 + i)
    return model, mixer


def test_mixtures_are_distributions_and_one_hot_selects_the_expert() -> None:
    lp = torch.randn(2, 3, 11).log_softmax(-1)
    weights = torch.tensor([[0.2, 0.3, 0.5], [0.0, 1.0, 0.0]])
    for mode in ("probability", "logit"):
        mixed = mix_log_probs(lp, weights, mode)
        torch.testing.assert_close(mixed.exp().sum(-1), torch.ones(2))
        torch.testing.assert_close(mixed[1], lp[1, 1], rtol=1e-5, atol=1e-5)
    expected = (weights[0, :, None] * lp[0].exp()).sum(0).log()
    torch.testing.assert_close(mix_log_probs(lp, weights, "probability")[0], expected, rtol=1e-5, atol=1e-6)


def test_replicated_batch_forward_equals_separate_adapter_forwards() -> None:
    model, mixer = experts()
    ids = torch.randint(0, 250, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), mixer.weighted(torch.eye(3).repeat(2, 1)):
        batched = model(ids.repeat_interleave(3, 0)).logits.view(2, 3, 8, -1)
    for i in range(3):
        model.base_model.set_adapter(f"objective_{i}")  # PEFT's own single-adapter path, no mixer
        with torch.no_grad(), mixer.weighted(torch.nn.functional.one_hot(torch.full((2,), i), 3).float()):
            alone = model(ids).logits
        torch.testing.assert_close(batched[:, i], alone, rtol=1e-4, atol=1e-5)
    model.base_model.set_adapter(mixer.names)
    assert not torch.allclose(batched[:, 0], batched[:, 1])


@pytest.mark.parametrize("variant", ["full", "attn", "logit"])
def test_stacked_mixing_equals_the_per_adapter_hooks_and_leaves_the_model_as_it_was(variant) -> None:
    model, mixer = policy(variant, copies=3)
    for seed, adapter in enumerate(model.peft_config):  # the shared adapter too (attn, logit), weight 1
        perturb(model, adapter, 20 + seed)
    model.eval()
    ids = torch.randint(0, 250, (4, 7), generator=torch.Generator().manual_seed(1))
    weights = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.2, 0.3, 0.5], [0.6, 0.4, 0.0]])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert mixer.supports_stacking()
    with torch.no_grad():
        with mixer.weighted(weights):
            hooked = model(ids).logits
        with mixer.stacked(weights):
            stacked = model(ids).logits
        with mixer.weighted(weights):
            after = model(ids).logits
        with model.disable_adapter():
            base = model(ids).logits
    torch.testing.assert_close(stacked, hooked, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(after, hooked)  # adapters back on, same weights
    assert not torch.allclose(stacked, base, atol=1e-3)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable
    with pytest.raises(ValueError, match="3 weight rows for a batch of 4"), mixer.stacked(weights[:3]):
        model(ids)
    model.train()
    with pytest.raises(RuntimeError, match="inference"), mixer.stacked(weights):
        pass


def test_one_hot_mixture_decoding_reproduces_the_experts_greedy_decoding() -> None:
    model, mixer = experts()
    from steerable.backbone.loading import load_tokenizer
    from tests.test_backbone import tiny_config

    tokenizer = load_tokenizer(tiny_config())
    prompts = [
        [{"role": "user", "content": "hello there"}],
        [{"role": "user", "content": "a longer question, ok?"}],
    ]
    settings = GenerationSettings(max_new_tokens=6, batch_size=2)
    for mode in ("probability", "logit"):
        sampler = MixtureSampler(mixer, tokenizer, mode=mode)
        mixed = sampler.generate(prompts, settings, torch.tensor([[0.0, 1.0, 0.0]] * 2))
        with mixer.weighted(torch.tensor([[0.0, 1.0, 0.0]] * 2)):
            alone = HFSampler(model, tokenizer).generate(prompts, settings)
        assert [c.token_ids for c in mixed] == [c.token_ids for c in alone]
        torch.testing.assert_close(
            torch.cat([c.logprobs for c in mixed]),
            torch.cat([c.logprobs for c in alone]),
            rtol=1e-4,
            atol=1e-4,
        )


def test_weights_can_follow_the_generated_tokens() -> None:
    _, mixer = experts()
    from steerable.backbone.loading import load_tokenizer
    from tests.test_backbone import tiny_config

    tokenizer = load_tokenizer(tiny_config())
    seen: list[int] = []

    def controller(indices: list[int], generated: torch.Tensor) -> torch.Tensor:
        seen.append(generated.shape[1])
        return torch.full((len(indices), 3), 1 / 3)

    settings = GenerationSettings(max_new_tokens=4, batch_size=2, do_sample=True, seed=0)
    out = MixtureSampler(mixer, tokenizer).generate(
        [[{"role": "user", "content": "hi"}]], settings, controller
    )
    assert seen == list(range(len(seen))) and len(out) == 1 and 1 <= len(out[0].token_ids) <= 4
    assert isinstance(mixer, AdapterMixer)
