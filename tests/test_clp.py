"""CLP: conditioned adapters equal the reference at init, mix adapter outputs per example, route gradients in
proportion to w; RLOO by hand; tied embeddings untouched; tiny CLP and Rewarded Soups runs end to end."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from hydra.errors import ConfigCompositionException
from safetensors.torch import load_file

from steerable.backbone.loading import load_base_model, load_tokenizer
from steerable.cli.common import validate
from steerable.cli.generate import generate
from steerable.config.schema import ConfigError, LoraConfig
from steerable.generation import GenerationSettings, logprobs
from steerable.generation.hf import HFSampler
from steerable.generation.logprobs import (
    pack_completions,
    policy_and_reference_logprobs,
    sequence_logprobs,
)
from steerable.methods.clp.conditioning import (
    ParameterConditioning,
    PromptConditioning,
    WeightSampler,
    build_conditioned_policy,
    split_targets,
    weights_text,
    with_weights_in_prompt,
)
from steerable.methods.clp.evaluate import weight_grid
from steerable.training.lm_module import parameter_groups
from steerable.training.policy_gradient import PGSettings, rloo_advantages, weighted_advantages
from tests.conftest import TINY_RUN, compose_config, train_in
from tests.test_backbone import tiny_config
from tests.test_reward_direction import PROMPTS, Corners, clp_module

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
LORA = LoraConfig(r=4, alpha=8, dropout=0.0)


def policy(variant: str, copies: int = 2, keep_shared: bool = True):
    cfg = tiny_config()
    tokenizer = load_tokenizer(cfg)
    shared, conditioned = split_targets(variant, LORA.target_modules, ATTENTION, "lm_head")
    torch.manual_seed(0)
    model, mixer = build_conditioned_policy(
        load_base_model(cfg, tokenizer), LORA, shared, conditioned, copies, keep_shared
    )
    return model, mixer


def perturb(model, adapter: str, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name and f".{adapter}." in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


@pytest.mark.parametrize("variant", ["full", "attn", "logit"])
def test_every_weighting_gives_the_reference_policy_at_initialisation(variant) -> None:
    model, mixer = policy(variant)
    ids = torch.randint(0, 250, (4, 9), generator=torch.Generator().manual_seed(0))
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7], [0.5, 0.5]])
    with mixer.weighted(weights):
        conditioned = model(ids).logits
    with model.disable_adapter():
        reference = model(ids).logits
    assert torch.equal(conditioned, reference)
    a0 = [p for n, p in model.named_parameters() if "lora_A.objective_0" in n]
    a1 = [p for n, p in model.named_parameters() if "lora_A.objective_1" in n]
    assert a0 and all(torch.equal(x, y) for x, y in zip(a0, a1, strict=True))  # identical copies


def _layer(model):
    return model.base_model.model.model.layers[0].self_attn.q_proj


def test_conditioned_layer_equals_the_weighted_sum_of_each_adapter_alone() -> None:
    model, mixer = policy("attn")
    perturb(model, "objective_0", 1)
    perturb(model, "objective_1", 2)
    layer = _layer(model)
    x = torch.randn(3, 5, layer.in_features, generator=torch.Generator().manual_seed(3))
    weights = torch.tensor([[0.2, 0.8], [0.9, 0.1], [0.5, 0.5]])
    with torch.no_grad(), mixer.weighted(weights):
        mixed = layer(x)
    with torch.no_grad(), mixer.weighted(torch.tensor([[1.0, 0.0]] * 3)):
        first = layer(x)
    with torch.no_grad(), mixer.weighted(torch.tensor([[0.0, 1.0]] * 3)):
        second = layer(x)
    expected = weights[:, 0, None, None] * first + weights[:, 1, None, None] * second
    torch.testing.assert_close(mixed, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(first, second)  # the two adapters really differ
    # mixing the outputs is mixing ΔW = B A; averaging the factors would give something else
    a0, a1 = layer.lora_A["objective_0"].weight, layer.lora_A["objective_1"].weight
    assert torch.equal(a0, a1)  # same A at init, so the check below is about B only
    b0, b1 = layer.lora_B["objective_0"].weight, layer.lora_B["objective_1"].weight
    delta = (0.2 * b0 + 0.8 * b1) @ a0 * layer.scaling["objective_0"]
    torch.testing.assert_close(mixed[0] - layer.base_layer(x[0]), x[0] @ delta.T, rtol=1e-4, atol=1e-5)


def test_gradients_reach_each_copy_in_proportion_to_its_weight() -> None:
    model, mixer = policy("attn")
    ids = torch.randint(0, 250, (1, 7), generator=torch.Generator().manual_seed(4))
    with mixer.weighted(torch.tensor([[0.25, 0.75]])):
        model(ids).logits.logsumexp(-1).sum().backward()
    layer = _layer(model)
    g0, g1 = layer.lora_B["objective_0"].weight.grad, layer.lora_B["objective_1"].weight.grad
    assert g0.abs().sum() > 0
    torch.testing.assert_close(g1, 3.0 * g0, rtol=1e-4, atol=1e-7)


def test_logit_variant_leaves_tied_input_embeddings_alone() -> None:
    model, mixer = policy("logit")
    perturb(model, "objective_0", 5)
    lm = model.base_model.model
    assert lm.lm_head.base_layer.weight is lm.model.embed_tokens.weight  # still tied, still frozen
    assert not lm.model.embed_tokens.weight.requires_grad
    ids = torch.randint(0, 250, (2, 6), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        embedded = lm.model.embed_tokens(ids)
        with mixer.weighted(torch.tensor([[1.0, 0.0], [1.0, 0.0]])):
            moved = model(ids).logits
        with model.disable_adapter():
            reference = model(ids).logits
    assert torch.equal(embedded, lm.model.embed_tokens.weight[ids])
    assert not torch.allclose(moved, reference)


@pytest.mark.parametrize("variant", ["attn", "logit"])
def test_a_shared_adapter_that_never_trains_is_removed_and_the_policy_is_the_same(variant) -> None:
    """keep_shared=False (shared_lr_scale=0): no shared adapter is left, so its gradients neither cost a backward
    nor count in the clipped norm; the copies start as they would beside it and every weighting's logits agree."""
    kept, kept_mixer = policy(variant)
    dropped, dropped_mixer = policy(variant, keep_shared=False)
    assert "shared" in kept.peft_config and list(dropped.peft_config) == ["objective_0", "objective_1"]
    copies = {n: p for n, p in dropped.named_parameters() if p.requires_grad}
    kept_copies = {n: p for n, p in kept.named_parameters() if p.requires_grad and ".shared." not in n}
    assert copies.keys() == kept_copies.keys()
    assert all(torch.equal(p, kept_copies[n]) for n, p in copies.items())  # same random initialisation
    for model in (kept, dropped):
        perturb(model, "objective_0", 1)
        perturb(model, "objective_1", 2)
    ids = torch.randint(0, 250, (2, 7), generator=torch.Generator().manual_seed(3))
    weights = torch.tensor([[0.8, 0.2], [0.1, 0.9]])
    with kept_mixer.weighted(weights):
        expected = kept(ids).logits
    with dropped_mixer.weighted(weights):
        logits = dropped(ids).logits
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)
    with dropped.disable_adapter(), torch.no_grad():
        assert not torch.allclose(dropped(ids).logits, logits)  # the reference is still the base
    if variant == "logit":  # nothing below the output layer needs a gradient: backward stops at lm_head
        assert all("lm_head" in n for n in copies)
        assert not dropped.base_model.model.model(ids).last_hidden_state.requires_grad


def _scored_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two rows: a 4-token prompt and a response, the second row right-padded by two."""
    ids = torch.randint(0, 250, (2, 9), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0
    response = mask.clone()
    response[:, :4] = 0
    return ids, mask, response


def _log_probs_both_ways(model, mixer, weights):
    """(the helper's policy and reference log-probs, two full passes', each policy's gradient)."""
    ids, mask, response = _scored_batch()
    copies = [p for p in model.parameters() if p.requires_grad]

    def grads(logp):
        return torch.autograd.grad((logp * torch.arange(9.0)).sum(), copies)

    logp, ref = policy_and_reference_logprobs(model, ids, mask, response, lambda: mixer.weighted(weights))
    with mixer.weighted(weights):
        full = sequence_logprobs(model, ids, mask, response)
    with torch.no_grad(), model.disable_adapter():
        full_ref = sequence_logprobs(model, ids, mask, response)
    return (logp, ref, grads(logp)), (full, full_ref, grads(full))


@pytest.mark.parametrize("variant", ["attn", "logit"])
def test_policy_and_reference_log_probs_take_one_trunk_pass_only_where_the_trunk_is_the_reference(
    variant, monkeypatch
) -> None:
    """logit (adapters only in lm_head, nothing below trains): after the first call checks the shortcut, the
    layers below the output run once for both; attn: twice. Values and gradients equal two full passes."""
    monkeypatch.setattr(logprobs, "_SHORTCUT_MATCHES", {})
    model, mixer = policy(variant, keep_shared=False)
    perturb(model, "objective_0", 1)
    perturb(model, "objective_1", 2)
    trunk_passes = []
    model.get_base_model().get_decoder().register_forward_hook(lambda *_: trunk_passes.append(1))
    weights = torch.tensor([[0.8, 0.2], [0.1, 0.9]])
    for call in range(2):
        trunk_passes.clear()
        (logp, ref, grad), (full, full_ref, full_grad) = _log_probs_both_ways(model, mixer, weights)
        torch.testing.assert_close(logp, full, rtol=0, atol=1e-6)
        torch.testing.assert_close(ref, full_ref, rtol=0, atol=1e-6)
        for a, b in zip(grad, full_grad, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
        assert not torch.allclose(logp, ref)  # the copies moved the policy off the reference
        assert ref.requires_grad is False
        helper_passes = len(trunk_passes) - 2  # the test's own two full passes
        if variant == "logit":
            assert helper_passes == (3 if call == 0 else 1)  # checked once (shortcut + two full passes)
        else:
            assert helper_passes == 2
    assert ({type(model.get_base_model()): True} if variant == "logit" else {}) == logprobs._SHORTCUT_MATCHES


def test_log_probs_from_the_sampled_hidden_states_skip_the_trunk_and_equal_two_full_passes(
    monkeypatch,
) -> None:
    """logit: the output layer's inputs recorded while sampling (`keep_hidden`) give the policy's and the
    reference's log-probs with no pass through the layers below, equal to two teacher-forced full passes (values
    and gradients) and to the sampler's own log-probs; a recording that does not line up is not used."""
    monkeypatch.setattr(logprobs, "_SHORTCUT_MATCHES", {})
    model, mixer = policy("logit", keep_shared=False)
    perturb(model, "objective_0", 1)
    perturb(model, "objective_1", 2)
    tokenizer = load_tokenizer(tiny_config())
    weights = torch.tensor([[0.8, 0.2], [0.1, 0.9]])
    settings = GenerationSettings(
        max_new_tokens=6, do_sample=True, num_return_sequences=2, seed=0, keep_hidden=True
    )
    rows = ParameterConditioning(mixer, stacked_sampling=True).rows(weights)
    prompts = ["a b c d e f g h", "i j"]  # unequal: left-padded while sampling, right-padded when scored
    completions = HFSampler(model, tokenizer).generate(prompts, settings, row_context=rows)
    assert [len(c.hidden) for c in completions] == [len(c.token_ids) for c in completions]
    ids, mask, response = pack_completions(completions, tokenizer.pad_token_id or 0)
    row_weights = weights.repeat_interleave(2, dim=0)
    copies = [p for p in model.parameters() if p.requires_grad]
    trunk_passes = []
    model.get_base_model().get_decoder().register_forward_hook(lambda *_: trunk_passes.append(1))

    def helper(hidden):
        trunk_passes.clear()
        return policy_and_reference_logprobs(
            model, ids, mask, response, lambda: mixer.weighted(row_weights), hidden=hidden
        )

    recorded = [c.hidden for c in completions]
    helper(recorded)  # the first call checks the one-trunk-pass shortcut against two full passes
    assert logprobs.scores_from_sampled_hidden(model)
    logp, ref = helper(recorded)
    assert trunk_passes == []
    with mixer.weighted(row_weights):
        full = sequence_logprobs(model, ids, mask, response)
    with torch.no_grad(), model.disable_adapter():
        full_ref = sequence_logprobs(model, ids, mask, response)
    torch.testing.assert_close(logp, full, rtol=0, atol=1e-5)
    torch.testing.assert_close(ref, full_ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(
        logp[response.bool()], torch.cat([c.logprobs for c in completions]), rtol=0, atol=1e-5
    )
    assert not torch.allclose(logp, ref) and ref.requires_grad is False

    def grads(values):
        return torch.autograd.grad((values * torch.arange(float(ids.shape[1]))).sum(), copies)

    for a, b in zip(grads(logp), grads(full), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)  # cached vs uncached attention: rounding
    short = [recorded[0][:-1], *recorded[1:]]
    torch.testing.assert_close(helper(short)[0], full, rtol=0, atol=1e-5)
    assert trunk_passes == [1]  # one row off by a token: the trunk runs again
    plain = GenerationSettings(max_new_tokens=6, do_sample=True, num_return_sequences=2, seed=0)
    assert all(
        c.hidden is None for c in HFSampler(model, tokenizer).generate(prompts, plain, row_context=rows)
    )
    assert not logprobs.scores_from_sampled_hidden(policy("attn", keep_shared=False)[0])


def test_a_model_whose_logits_are_more_than_its_output_layer_keeps_two_full_passes(monkeypatch) -> None:
    monkeypatch.setattr(logprobs, "_SHORTCUT_MATCHES", {})
    model, mixer = policy("logit", keep_shared=False)
    perturb(model, "objective_0", 1)
    inner = model.get_base_model()
    plain = type(inner)

    class SoftCapped(plain):  # e.g. Gemma 2's capping: logits are not lm_head(hidden)
        def forward(self, *args, **kwargs):
            out = plain.forward(self, *args, **kwargs)
            out.logits = 3.0 * torch.tanh(out.logits / 3.0)
            return out

    inner.__class__ = SoftCapped
    weights = torch.tensor([[0.8, 0.2], [0.1, 0.9]])
    for _ in range(2):
        (logp, ref, _), (full, full_ref, _) = _log_probs_both_ways(model, mixer, weights)
        torch.testing.assert_close(logp, full, rtol=0, atol=1e-6)
        torch.testing.assert_close(ref, full_ref, rtol=0, atol=1e-6)
    assert {SoftCapped: False} == logprobs._SHORTCUT_MATCHES


def test_a_learning_rate_scale_moves_only_the_parameters_it_names() -> None:
    model, _ = policy("attn")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = parameter_groups(named, 0.1, ((".shared.", 0.0),))
    assert sorted(g["lr"] for g in groups) == [0.0, 0.1]
    assert sum(len(g["params"]) for g in groups) == len(named)
    before = {n: p.detach().clone() for n, p in named}
    optimizer = torch.optim.AdamW(groups)
    for _, p in named:
        p.grad = torch.ones_like(p)
    optimizer.step()
    moved = {n for n, p in named if not torch.equal(p, before[n])}
    assert moved == {n for n, _ in named if ".shared." not in n} and moved
    assert len(parameter_groups(named, 0.1, ())) == 1  # no scales: one group, as before


def test_rloo_advantage_matches_a_hand_computation() -> None:
    rewards = torch.tensor([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]])
    expected = torch.tensor([[1 - 4.0, 2 - 3.5, 6 - 1.5], [0 - 1.5, 0 - 1.5, 3 - 0.0]])
    torch.testing.assert_close(rloo_advantages(rewards), expected)
    assert torch.allclose(rloo_advantages(rewards).sum(1), torch.zeros(2))  # the baseline is unbiased
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(torch.ones(2, 1))


def test_per_objective_scale_lets_the_weight_not_the_spread_set_the_share() -> None:
    """Objective 0 varies 10x more between samples than objective 1; at w = (0.3, 0.7) the plain advantage
    follows objective 0, the per-objective scaled one follows objective 1 (the weight that is larger)."""
    torch.manual_seed(0)
    k, prompts = 4, 8
    scores = torch.stack([10 * torch.randn(prompts * k), torch.randn(prompts * k)], dim=1)
    weights = torch.tensor([0.3, 0.7]).expand(prompts * k, 2)
    no_kl = torch.zeros(prompts * k)

    def follows(scale: str) -> list[float]:
        s = PGSettings(k, GenerationSettings(), kl_coef=0.0, objective_scale=scale)
        advantages = weighted_advantages(scores, weights, no_kl, s)
        deviations = scores - scores.view(prompts, k, 2).mean(1).repeat_interleave(k, 0)
        return [float(torch.corrcoef(torch.stack([advantages, deviations[:, i]]))[0, 1]) for i in range(2)]

    plain, scaled = follows("none"), follows("per_objective")
    assert plain[0] > 0.9 and plain[1] < 0.3
    assert scaled[1] > scaled[0] and scaled[1] > 0.8
    # one w and no KL: the scaled advantage is the plain one of the rescaled scores, still zero-sum per prompt
    s = PGSettings(k, GenerationSettings(), kl_coef=0.0, objective_scale="per_objective")
    assert torch.allclose(
        weighted_advantages(scores, weights, no_kl, s).view(prompts, k).sum(1),
        torch.zeros(prompts),
        atol=1e-5,
    )


def test_weight_grid_and_prompt_format() -> None:
    two = weight_grid(2, 0.1)
    assert two.shape == (11, 2) and torch.allclose(two.sum(1), torch.ones(11))
    assert torch.allclose(two[:, 0], torch.linspace(1, 0, 11))
    assert weight_grid(3, 0.25).shape == (15, 3)
    assert (
        weights_text(["verbosity", "positivity"], [0.3, 0.7])
        == "Reward weights: verbosity=0.30, positivity=0.70"
    )
    shown = with_weights_in_prompt([{"role": "user", "content": "hi"}], ["a", "b"], [1.0, 0.0])
    assert shown == [
        {"role": "system", "content": "Reward weights: a=1.00, b=0.00"},
        {"role": "user", "content": "hi"},
    ]


def test_mirrored_weightings_show_each_prompt_at_w_and_at_w_reversed() -> None:
    """`method.weights_per=mirrored`: a step samples every prompt twice, under w and under its reverse, k
    samples each, and each row is trained under the weighting it was sampled with."""
    torch.manual_seed(0)
    drawn = WeightSampler(3, 0.5, "mirrored")(4)
    assert drawn.shape == (8, 3) and torch.allclose(drawn.sum(1), torch.ones(8))
    assert torch.equal(drawn[1::2], drawn[0::2].flip(-1)) and not torch.equal(drawn[0::2], drawn[1::2])
    assert WeightSampler(2, 1.0, "example")(4).shape == (4, 2)

    seen: list[tuple[str, list[float]]] = []

    class Recording(PromptConditioning):
        def prompt(self, messages, weights):
            seen.append((messages[-1]["content"], weights.tolist()))
            return super().prompt(messages, weights)

    module, _ = clp_module("prompt", Corners())
    recording = Recording(["lower", "upper"], WeightSampler(2, 1.0, "mirrored"))
    module.conditioning = recording
    scored: list[str] = []
    rewards = module.rewards
    module.rewards = lambda users, texts: scored.extend(users) or rewards(users, texts)
    module.rl_loss(PROMPTS[:2])
    assert [text for text, _ in seen] == ["question 0", "question 0", "question 1", "question 1"]
    for (_, w), (_, reverse) in zip(seen[0::2], seen[1::2], strict=True):
        assert reverse == w[::-1] and w != reverse
    k = module.settings.samples_per_prompt  # rows: each prompt's two weightings, k samples each, in order
    assert scored == [f"question {i}" for i in (0, 1) for _ in range(2 * k)]


CLP = [
    *TINY_RUN,
    "reward=[verbosity,positivity]",
    "trainer.max_steps=2",
    "method.samples_per_prompt=2",
    "method.batch_size=2",
    "method.sampling.max_new_tokens=6",
    "method.calibration_prompts=4",
    "method.eval.num_prompts=2",
    "method.eval.grid_step=0.5",
    "method.eval.sampling.max_new_tokens=6",
]


def run_as_cli(run_dir, *overrides: str) -> dict:
    return train_in(run_dir, *CLP, *overrides)


def test_tiny_clp_and_rewarded_soups_runs_share_one_pareto_evaluation(tmp_path) -> None:
    soups = tmp_path / "soups"
    soup_results = run_as_cli(soups, "method=rewarded_soups")
    assert set(soup_results["train"]["single_runs"]) == {"verbosity", "positivity"}
    clp = tmp_path / "clp"
    results = run_as_cli(clp, "method=clp", "method.variant=attn", f"method.eval.compare=[{soups}]")
    pareto = json.loads((clp / "pareto" / "pareto.json").read_text())
    assert [a["arm"] for a in pareto["arms"]] == ["clp-attn", "rewarded-soups", "logit-mixing"]
    assert len(pareto["grid"]) == 3 and pareto["reference_point"] == results["calibrate"]["reference_point"]
    assert (clp / "pareto" / "pareto.png").is_file() and "## Pareto evaluation" in (
        clp / "report.md"
    ).read_text()
    # steerable-generate with a weighting, and the errors for bad ones
    gen = validate(
        compose_config(
            "generate", [f"run={clp}", "prompt=Any tips?", "sampling.max_new_tokens=4", "weights=[0.2,0.8]"]
        )
    )
    assert len(generate(gen)) == 1
    with pytest.raises(ConfigError, match="sum to 1"):
        generate(validate(compose_config("generate", [f"run={clp}", "prompt=x", "weights=[0.5,0.6]"])))
    with pytest.raises(ConfigError, match="one value per objective"):
        generate(validate(compose_config("generate", [f"run={clp}", "prompt=x", "weights=[1.0]"])))
    with pytest.raises(ConfigError, match=r"preference: run=.* whose only control is weights"):
        generate(validate(compose_config("generate", [f"run={clp}", "prompt=x", "preference=concise"])))


def test_clp_config_errors_name_the_key(tmp_path) -> None:
    with pytest.raises(ConfigCompositionException, match=r"method\.variant"):  # an Enum: fails at composition
        validate(compose_config("train", [*CLP, "method=clp", "method.variant=middle"]))
    with pytest.raises(ConfigError, match=r"method\.samples_per_prompt"):
        validate(compose_config("train", [*CLP, "method=clp", "method.samples_per_prompt=1"]))
    with pytest.raises(ConfigError, match=r"method\.shared_lr_scale"):
        validate(compose_config("train", [*CLP, "method=clp", "method.shared_lr_scale=-1"]))
    # the objectives rule runs at validation, before any folder or model exists
    with pytest.raises(ConfigError, match="at least two objectives"):
        validate(compose_config("train", [*TINY_RUN, "method=clp", "reward=[verbosity]"]))


def test_single_reward_rl_run_is_a_loadable_policy(tmp_path) -> None:
    from steerable.policies.plain import load_run_model

    run_dir = tmp_path / "rl"
    results = run_as_cli(run_dir, "method=rl", "reward=[verbosity]", "method.weights=[1.0]")
    assert results["train"]["objectives"] == ["verbosity"] and results["train"]["steps"] == 2
    model, _ = load_run_model(run_dir)  # the SuperHF eval loads RL baselines this way
    assert any("lora_" in n for n, _ in model.named_parameters())


def test_a_warm_started_run_trains_and_serves_on_its_sft_base(tmp_path) -> None:
    """method.warm_start.steps > 0: SFT first into warm_start/, then calibration, RL and the loaded policy all
    start from that SFT model (its adapter folded in); steps=0 is a no-op that leaves the base alone."""
    from steerable.backbone import load_backbone
    from steerable.backbone.adapters import reference_policy
    from steerable.methods.registry import load_policy
    from steerable.policies.runs import run_model_config

    run_dir = tmp_path / "warm"
    results = run_as_cli(
        run_dir,
        "method=clp",
        "method.variant=logit",
        "method.stages=[warm_start,calibrate,train]",
        "method.warm_start.steps=3",
        "method.warm_start.lr=0.05",
        "method.shared_lr_scale=0",
    )
    final = run_dir / "checkpoints" / "final"
    assert not (
        final / "shared"
    ).exists()  # at lr x 0 it would stay at its zero start: removed before training
    assert results["train"]["adapters"] == ["objective_0", "objective_1"]
    copy = load_file(final / "objective_0" / "adapter_model.safetensors")
    assert any(t.any() for k, t in copy.items() if "lora_B" in k)  # while the copies trained
    assert results["warm_start"]["steps"] == 3 and "cost" in results["warm_start"]
    sft_adapter = run_dir / "warm_start" / "checkpoints" / "final"
    assert run_model_config(run_dir).merge_adapters == [str(sft_adapter)]
    ids = torch.randint(0, 250, (1, 10), generator=torch.Generator().manual_seed(0))
    unwarmed = replace(run_model_config(run_dir), merge_adapters=[])
    sft, _ = load_backbone(unwarmed, adapter_dir=sft_adapter)
    policy = load_policy(run_dir)
    with torch.no_grad(), reference_policy(policy.model):
        reference = policy.model(ids).logits
        expected = sft(ids).logits
    torch.testing.assert_close(reference, expected, atol=1e-4, rtol=1e-4)  # KL is to the SFT model
    plain, _ = load_backbone(unwarmed)
    with torch.no_grad():
        assert not torch.allclose(plain(ids).logits, expected, atol=1e-3)  # the warm start moved it

    cold = run_as_cli(tmp_path / "cold", "method=clp", "method.stages=[warm_start,calibrate]")
    assert cold["warm_start"]["steps"] == 0 and not (tmp_path / "cold" / "warm_start").exists()
    assert run_model_config(tmp_path / "cold").merge_adapters == []
