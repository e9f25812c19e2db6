"""PCM pieces: the controller gives one weight distribution per position in one forward, the mixture
log-likelihood from cached expert log-probs equals a direct recomputation with the experts, and the REBEL loss
on the cached values equals the loss on recomputed ones (and a hand computation)."""

from __future__ import annotations

import pytest
import torch

from steerable.backbone.loading import load_base_model, load_tokenizer
from steerable.generation import GenerationSettings
from steerable.generation.logprobs import pack_completions, sequence_logprobs
from steerable.generation.mixture import MixtureSampler
from steerable.methods.pcm.controller import (
    PreferenceController,
    aligned_log_alpha,
    mixture_log_likelihood,
    rebel_loss,
)
from tests.test_backbone import tiny_config
from tests.test_mixture import experts


def controller(num_experts: int = 3) -> PreferenceController:
    cfg = tiny_config()
    ctrl = PreferenceController(load_base_model(cfg, load_tokenizer(cfg)), num_experts)
    torch.nn.init.normal_(ctrl.head.weight, std=0.5, generator=torch.Generator().manual_seed(0))
    return ctrl


def test_controller_gives_valid_weights_at_every_position_and_masks_inactive_experts() -> None:
    ctrl = controller()
    ids = torch.randint(0, 250, (2, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    log_alpha = ctrl(ids, mask)
    assert log_alpha.shape == (2, 7, 3)
    torch.testing.assert_close(log_alpha.exp().sum(-1), torch.ones(2, 7))
    assert not torch.allclose(log_alpha[:, 0], log_alpha[:, -1])  # weights depend on the context
    masked = ctrl(ids, mask, active=torch.tensor([[True, False, True], [True, True, True]]))
    assert torch.all(masked[0, :, 1] == float("-inf"))
    # causal: the weights at position t do not change when later tokens change
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 250
    torch.testing.assert_close(ctrl(changed, mask)[:, :-1], log_alpha[:, :-1])


def test_cached_mixture_likelihood_and_rebel_loss_equal_a_direct_recomputation() -> None:
    model, mixer = experts()
    tokenizer = load_tokenizer(tiny_config())
    ctrl = controller()
    prompts = [[{"role": "user", "content": "one prompt"}]] * 2 + [
        [{"role": "user", "content": "another, longer"}]
    ] * 2

    def weights(indices, generated):  # the controller on [prompt; generated so far], last position
        rows = [
            tokenizer.apply_chat_template(prompts[i], add_generation_prompt=True, tokenize=True)
            for i in indices
        ]
        rows = [
            list(r["input_ids"] if hasattr(r, "keys") else r) + generated[k].tolist()
            for k, r in enumerate(rows)
        ]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        with torch.no_grad():
            return ctrl(ids, mask)[:, -1].exp()

    settings = GenerationSettings(max_new_tokens=5, batch_size=4, do_sample=True, seed=3)
    samples = MixtureSampler(mixer, tokenizer).generate(prompts, settings, weights)
    ids, mask, response = pack_completions(samples, tokenizer.pad_token_id)
    cached = torch.zeros(*ids.shape, 3)
    for row, c in enumerate(samples):
        start = len(c.prompt_token_ids)
        cached[row, start : start + len(c.token_ids)] = c.expert_logprobs
    # direct: run every expert teacher-forced on the sampled responses
    direct = torch.zeros_like(cached)
    for i in range(3):
        one_hot = torch.nn.functional.one_hot(torch.full((len(samples),), i), 3).float()
        with torch.no_grad(), mixer.weighted(one_hot):
            direct[:, :, i] = sequence_logprobs(model, ids, mask, response)
    torch.testing.assert_close(
        cached * response[..., None], direct * response[..., None], rtol=1e-4, atol=1e-4
    )

    log_alpha = aligned_log_alpha(ctrl(ids, mask))
    from_cache = mixture_log_likelihood(log_alpha, cached, response)
    from_experts = mixture_log_likelihood(log_alpha, direct, response)
    torch.testing.assert_close(from_cache, from_experts, rtol=1e-4, atol=1e-4)
    # sampling-time mixture log-probs are those of the same controller: the ratio to the old policy starts at 0
    torch.testing.assert_close(
        from_cache, torch.stack([c.logprobs.sum() for c in samples]), rtol=1e-4, atol=1e-4
    )

    reward = torch.tensor([0.9, 0.2, 0.4, 0.6])
    old = from_cache.detach() - torch.tensor([0.1, -0.2, 0.3, 0.0])
    loss = rebel_loss(from_cache, old, reward, eta=2.0)
    torch.testing.assert_close(loss, rebel_loss(from_experts, old, reward, eta=2.0), rtol=1e-4, atol=1e-5)
    by_hand = ((0.1 - (-0.2) - 2.0 * (0.9 - 0.2)) ** 2 + (0.3 - 0.0 - 2.0 * (0.4 - 0.6)) ** 2) / 2
    assert loss.item() == pytest.approx(by_hand, rel=1e-4)
    loss.backward()
    assert ctrl.head.weight.grad.abs().sum() > 0  # only the controller learns; the experts are never touched
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" in n)


def bt_rewards(beta: float):
    """BTRewards over two length dimensions (words, log words) with hand-set cached reference scores."""
    from steerable.methods.pcm.preferences import combinations, parse_dimensions
    from steerable.methods.pcm.rewards import BTRewards, _key

    dims = parse_dimensions(["verbosity:concise:detailed", "wordiness:terse:wordy"])
    rewards = BTRewards(
        {"verbosity": {"type": "length"}, "wordiness": {"type": "length", "log_scale": True}}, dims, beta
    )
    items = [
        ([{"role": "user", "content": f"question {i}"}], pref) for i, pref in enumerate(combinations(dims))
    ]
    for k, (prompt, pref) in enumerate(items):
        rewards.reference[_key(prompt, pref)] = {"verbosity": 3.0 + k, "wordiness": 1.5 - 0.25 * k}
    return rewards, items


def per_side_formula(rewards, items, texts: list[str]) -> list[float]:
    """The formula as PCM first wrote it (Python floats, one side at a time): what the numbers must stay."""
    import math

    from steerable.methods.pcm.preferences import side_sign
    from steerable.methods.pcm.rewards import _key

    prompts = [p[0]["content"] for p, _ in items]
    scores = rewards.scores(prompts, texts)
    out = []
    for k, (prompt, pref) in enumerate(items):
        ref = rewards.reference[_key(prompt, pref)]
        terms = []
        for side in pref:
            name, sign = side_sign(side, rewards.dims)
            terms.append(1 / (1 + math.exp(-rewards.beta * sign * (float(scores[name][k]) - ref[name]))))
        out.append(sum(terms) / len(terms))
    return out


def test_bt_rewards_equal_the_per_side_formula_and_a_low_side_prefers_lower_scores() -> None:
    rewards, items = bt_rewards(beta=0.7)
    texts = ["one two", "a b c d e f g", "x " * 12, "single"]
    got = rewards(items, texts)
    assert got.dtype == torch.float32 and got.shape == (4,)
    assert torch.equal(got, torch.tensor(per_side_formula(rewards, items, texts)))  # bit for bit
    # ("concise", "terse") vs ("detailed", "wordy") on the same text and references: each term is mirrored
    from steerable.methods.pcm.rewards import _key

    prompt, opposite = items[0][0], items[3][1]
    rewards.reference[_key(prompt, opposite)] = rewards.reference[_key(*items[0])]
    flipped = rewards([items[0], (prompt, opposite)], [texts[0], texts[0]])
    torch.testing.assert_close(flipped.sum(), torch.tensor(1.0))


def test_bt_rewards_saturate_instead_of_overflowing_on_a_large_score_gap() -> None:
    rewards, items = bt_rewards(beta=1.0)
    long_reply = "word " * 1000  # 1000 words against a reference of 3-6: a gap far past exp's range
    texts = [long_reply, long_reply, long_reply, long_reply]
    with pytest.raises(OverflowError):
        per_side_formula(rewards, items, texts)  # what PCM computed before: math.exp(> 709) raised
    got = rewards(items, texts)
    assert torch.isfinite(got).all()
    # the verbosity term saturates (concise: 0, detailed: 1); the log-words term is an ordinary sigmoid
    import math

    from steerable.methods.pcm.rewards import _key

    for k, (prompt, (verbosity, wordiness)) in enumerate(items):
        gap = math.log1p(1000) - rewards.reference[_key(prompt, (verbosity, wordiness))]["wordiness"]
        word_term = 1 / (1 + math.exp(-gap if wordiness == "wordy" else gap))
        expected = ((verbosity == "detailed") + word_term) / 2
        assert got[k].item() == pytest.approx(expected, rel=1e-6)
