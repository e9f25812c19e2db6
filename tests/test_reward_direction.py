"""Reward-direction tests: each online method, run for a few rounds on the tiny model, moves its reward the way
its objective says. The rewards are dense character-class fractions (lowercase vs uppercase letters of the
reply), which a random byte-level model can move within a few rounds; they conflict (a character is one or the
other). Each compares means over several prompts and samples with a margin, under fixed seeds."""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import pytest
import torch

from steerable.backbone.adapters import add_adapter, wrap_lora
from steerable.backbone.loading import load_base_model, load_tokenizer
from steerable.backbone.mixing import AdapterMixer
from steerable.config.schema import LoraConfig, SamplingConfig
from steerable.generation import Engine, GenerationSettings, make_sampler
from steerable.methods.clp.conditioning import (
    ParameterConditioning,
    PromptConditioning,
    build_conditioned_policy,
    split_targets,
)
from steerable.methods.pcm.config import PCMConfig
from steerable.methods.pcm.module import PCMModule
from steerable.methods.pcm.policy import Mixture, build_controller, controller_weights
from steerable.methods.pcm.preferences import combinations, parse_dimensions
from steerable.methods.pcm.rewards import BTRewards
from steerable.rewards.base import RewardSource
from steerable.training.lm_module import OptimSettings
from steerable.training.online import OnlineModule, PromptFeed
from steerable.training.policy_gradient import NoConditioning, PGSettings, PolicyGradientModule
from tests.test_backbone import tiny_config

LOWER = frozenset("abcdefghijklmnopqrstuvwxyz")
UPPER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
END = "<|im_end|>"
PROMPTS = [[{"role": "user", "content": f"question {i}"}] for i in range(4)]


def fraction(texts: Sequence[str], chars: frozenset[str]) -> torch.Tensor:
    """[N] share of each text's characters in `chars` (percent, so a z-scoring-free reward of order 1-10)."""
    return torch.tensor([100 * sum(c in chars for c in t) / max(len(t), 1) for t in texts])


class CaseRewards:
    """Two conflicting objectives: percent lowercase letters, percent uppercase letters: [N, 2]."""

    names = ("lower", "upper")

    def __call__(self, prompts: list[str], texts: list[str]) -> torch.Tensor:
        return torch.stack([fraction(texts, LOWER), fraction(texts, UPPER)], dim=1) / 10


def fit_rounds(module: OnlineModule, items: list, rounds: int, batch: int) -> None:
    """`rounds` rounds of an online module under a plain Lightning Trainer (no run folder, no logger)."""
    loader = torch.utils.data.DataLoader(items * rounds, batch_size=batch, collate_fn=list)
    arguments = {"max_steps": rounds * module.updates_per_round, **module.trainer_arguments()}
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **arguments,
    )
    trainer.fit(module, loader)


def sampling(n: int, seed: int | None = None, tokens: int = 12) -> GenerationSettings:
    return GenerationSettings(
        max_new_tokens=tokens,
        do_sample=True,
        temperature=1.0,
        num_return_sequences=n,
        batch_size=32,
        seed=seed,
    )


# ------------------------------------------------------------------------------------------------- CLP


class Corners:
    """Weightings for a batch of prompts: a fixed one, or the two corners of the simplex alternating."""

    def __init__(self, fixed: Sequence[float] | None = None) -> None:
        self.fixed = fixed

    def __call__(self, n: int) -> torch.Tensor:
        if self.fixed is not None:
            return torch.tensor([list(self.fixed)] * n)
        return torch.tensor([[1.0, 0.0], [0.0, 1.0]]).repeat((n + 1) // 2, 1)[:n]


def clp_module(variant: str, draw: Corners, lr: float = 1e-2):
    torch.manual_seed(0)
    cfg, lora = tiny_config(), LoraConfig(r=8, alpha=16, dropout=0.0)
    tokenizer = load_tokenizer(cfg)
    shared, conditioned = split_targets(variant, lora.target_modules, ATTENTION, "lm_head")
    model, mixer = build_conditioned_policy(load_base_model(cfg, tokenizer), lora, shared, conditioned, 2)
    conditioning = (
        ParameterConditioning(mixer, draw, stacked_sampling=True)  # as clp_train_stage samples
        if mixer
        else PromptConditioning(CaseRewards.names, draw)
    )
    settings = PGSettings(samples_per_prompt=4, generation=sampling(4), kl_coef=0.0, engine=Engine(END))
    optim = OptimSettings(lr=lr, scheduler="constant", total_steps=100)
    module = PolicyGradientModule(
        model, tokenizer, optim, settings, CaseRewards(), conditioning, PromptFeed(per_round=4)
    )
    return module, conditioning


def rewards_under(module: PolicyGradientModule, conditioning, weights: Sequence[float]) -> torch.Tensor:
    """[2] mean rewards of 8 fresh samples per prompt with the policy conditioned on `weights`."""
    w = torch.tensor([list(weights)] * len(PROMPTS))
    shown = [conditioning.prompt(p, x) for p, x in zip(PROMPTS, w, strict=True)]
    sampler = make_sampler(module.model, module.tokenizer, END)
    completions = sampler.generate(shown, sampling(8, seed=1), row_context=conditioning.rows(w))
    return CaseRewards()([], [c.text for c in completions]).mean(0)


def test_clp_reward_direction_training_at_w_1_0_raises_objective_1_more_than_at_0_1() -> None:
    gains = {}
    for w in ((1.0, 0.0), (0.0, 1.0)):
        module, conditioning = clp_module("attn", Corners(w))
        before = rewards_under(module, conditioning, w)
        fit_rounds(module, PROMPTS, rounds=15, batch=4)
        gains[w] = rewards_under(module, conditioning, w) - before
    # objective 1 (lowercase) rises when it is rewarded, and more than when the other objective is
    assert gains[(1.0, 0.0)][0] > 0.5
    assert gains[(1.0, 0.0)][0] > gains[(0.0, 1.0)][0] + 0.5
    assert gains[(0.0, 1.0)][1] > gains[(1.0, 0.0)][1] + 0.5  # and symmetrically for objective 2


@pytest.mark.parametrize("variant", ["attn", "logit"])
def test_clp_reward_direction_one_policy_steers_by_its_weights(variant) -> None:
    """CLP's claim at tiny scale: one policy trained on both corners, then asked for each, gives each
    objective more where its weight is 1."""
    module, conditioning = clp_module(variant, Corners())
    fit_rounds(module, PROMPTS, rounds=20, batch=4)
    first, second = (
        rewards_under(module, conditioning, (1.0, 0.0)),
        rewards_under(module, conditioning, (0.0, 1.0)),
    )
    assert first[0] > second[0] + 0.5 and second[1] > first[1] + 0.5


# --------------------------------------------------------------------------------------------- SuperHF


def ascii_only(model: torch.nn.Module, tokenizer) -> torch.nn.Module:
    """The tiny byte-level model restricted to printable ASCII replies (and the end of turn): a stray high byte
    would decode to U+FFFD, which SuperHF's re-tokenised training text turns into three other bytes; a real
    tokenizer round-trips its samples, and so does this model then."""
    allowed = [i for i in range(len(tokenizer)) if 32 <= ord(tokenizer.decode([i])[:1] or "\0") < 127]
    bias = torch.full((len(tokenizer),), -1e4)
    bias[[*allowed, tokenizer.convert_tokens_to_ids(END)]] = 0.0
    model.get_output_embeddings().register_forward_hook(lambda module, inputs, out: out + bias.to(out.dtype))
    return model


def superhf_rewards_per_round(kl_coef: float, rounds: int = 12) -> list[float]:
    """SuperHF's loop on the tiny model rewarded for lowercase letters: the mean reward of all samples of each
    superbatch (what the filter then picks the best of)."""
    from steerable.data.tokenize import end_of_turn_id
    from steerable.generation import Engine
    from steerable.methods.superhf.loss import KLSettings
    from steerable.methods.superhf.module import Rollout, SuperHFModule, SuperHFSettings

    torch.manual_seed(0)
    cfg = tiny_config()
    tokenizer = load_tokenizer(cfg)
    base = ascii_only(load_base_model(cfg, tokenizer), tokenizer)
    model = wrap_lora(base, LoraConfig(r=8, alpha=16, dropout=0.0))
    settings = SuperHFSettings(
        completions_per_prompt=16,
        top_k=4,
        minibatch_size=4,
        generation=sampling(16),
        kl=KLSettings(coef=kl_coef),
        gradient_clip=1.0,
    )
    module = SuperHFModule(
        model,
        OptimSettings(lr=1e-2, scheduler="constant", total_steps=rounds),
        settings,
        Rollout(
            Engine(END),
            tokenizer,
            lambda prompts, texts: fraction(texts, LOWER).tolist(),
            end_of_turn_id(tokenizer),
        ),
        feed=PromptFeed(per_round=4),
    )
    seen: list[float] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            seen.append(pl_module.last_local_metrics["train/reward_all"])

    loader = torch.utils.data.DataLoader(PROMPTS * rounds, batch_size=4, collate_fn=list)
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Record()],
        **module.trainer_arguments(),  # one pass over the prompts: `rounds` superbatches
    )
    trainer.fit(module, loader)
    return seen


def test_superhf_reward_direction_the_filtered_reward_rises_over_the_loop() -> None:
    rewards = superhf_rewards_per_round(kl_coef=0.0)
    assert len(rewards) == 12
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last > first + 10, rewards  # percentage points of lowercase letters (about 24 -> 54 here)


# ------------------------------------------------------------------------------------------------- PCM


class CaseScore(RewardSource):
    """Lowercase minus uppercase letters, percent: the `case` dimension (high side `lower`)."""

    names = ["case"]  # noqa: RUF012 - RewardSource's interface is a list attribute

    def _score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        return ((fraction(responses, LOWER) - fraction(responses, UPPER)) / 10).unsqueeze(1)


class Flat(RewardSource):
    """A dimension no expert can move: every reply scores 0, so its Bradley-Terry term is a constant 1/2."""

    names = ["flat"]  # noqa: RUF012

    def _score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        return torch.zeros(len(responses), 1)


def case_experts(tokenizer):
    """Four experts on the tiny base: `lower` and `upper` fine-tuned for a few steps on lowercase / uppercase
    letter strings, `dull` and `plain` (the flat dimension's sides) left at the base policy."""
    torch.manual_seed(0)
    lora = LoraConfig(r=8, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"])
    model = wrap_lora(load_base_model(tiny_config(), tokenizer), lora, adapter_name="upper")
    for name in ("lower", "dull", "plain"):
        add_adapter(model, name, lora)
    generator = torch.Generator().manual_seed(0)
    for name, letters in (("upper", sorted(UPPER)), ("lower", sorted(LOWER))):
        model.base_model.set_adapter(name)
        params = [p for n, p in model.named_parameters() if f".{name}." in n]
        optimizer = torch.optim.Adam(params, lr=1e-2)
        for _ in range(30):
            picks = torch.randint(0, len(letters), (8, 24), generator=generator).tolist()
            ids = tokenizer(
                ["".join(letters[i] for i in row) for row in picks], return_tensors="pt"
            ).input_ids
            loss = model(input_ids=ids, labels=ids).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    return model, AdapterMixer(model, ["upper", "lower", "dull", "plain"])


def case_weight(controller, tokenizer, items, dims) -> torch.Tensor:
    """[items] the controller's weight on the case dimension's expert at the first reply token."""
    alpha = controller_weights(controller, tokenizer, items, dims)(
        list(range(len(items))), torch.zeros(len(items), 0, dtype=torch.long)
    )
    return alpha[:, :2].sum(
        1
    )  # experts are ordered upper, lower, dull, plain; one of the first two is active


def test_pcm_reward_direction_the_controller_moves_toward_the_named_expert() -> None:
    dims = parse_dimensions(["case:upper:lower", "flat:dull:plain"])
    tokenizer = load_tokenizer(tiny_config())
    experts, mixer = case_experts(tokenizer)
    sampling = SamplingConfig(max_new_tokens=12, do_sample=True)
    m = PCMConfig(controller_hidden=32, lr=1e-2, batch_size=8, epochs=2, eta=10.0, sampling=sampling)
    controller = build_controller(m, tiny_config(), tokenizer, 4, seed=0)
    rewards = BTRewards({}, [], m.bt_beta)
    rewards.sources, rewards.dims = {"case": CaseScore(), "flat": Flat()}, dims
    items = [(p, pref) for p in PROMPTS for pref in combinations(dims)]
    optim = OptimSettings(lr=m.lr, scheduler="constant", total_steps=100)
    module = PCMModule(Mixture(experts, tokenizer, mixer, controller, dims), rewards, m, optim, None)
    before = case_weight(controller, tokenizer, items, dims)
    torch.testing.assert_close(before, torch.full_like(before, 0.5))  # the untrained controller is uniform
    fit_rounds(module, items, rounds=12, batch=m.batch_size)
    after = case_weight(controller.eval(), tokenizer, items, dims)
    # whichever side of `case` the preference names (upper or lower), the weight moves onto that expert
    for pref in combinations(dims):
        chosen = [i for i, (_, p) in enumerate(items) if p == pref]
        assert after[chosen].mean() > 0.75, (pref, after[chosen])  # about 0.98 here


# ------------------------------------------------------------------------------------------- KL as a loss


class NoReward:
    names = ("none",)

    def __call__(self, prompts: list[str], texts: list[str]) -> torch.Tensor:
        return torch.zeros(len(texts), 1)


def kl_loss_module(perturbed: bool) -> PolicyGradientModule:
    """Single-objective RL with no reward signal and the KL in the loss (kl_in "loss", coefficient 1)."""
    torch.manual_seed(0)
    cfg = tiny_config()
    tokenizer = load_tokenizer(cfg)
    model = wrap_lora(load_base_model(cfg, tokenizer), LoraConfig(r=8, alpha=16, dropout=0.0))
    if perturbed:  # a policy away from the reference (adapter off)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape) * 0.5)
    settings = PGSettings(
        samples_per_prompt=4, generation=sampling(4), kl_coef=1.0, kl_in="loss", engine=Engine(END)
    )
    optim = OptimSettings(lr=1e-2, scheduler="constant", total_steps=100)
    return PolicyGradientModule(
        model, tokenizer, optim, settings, NoReward(), NoConditioning(torch.ones(1)), PromptFeed(per_round=4)
    )


def test_the_kl_loss_term_has_no_gradient_at_the_reference_policy() -> None:
    """At the reference the KL is at its minimum, so its loss term must not push; the sampled log-ratio used
    before did (its gradient is the sampled tokens' score, zero only in expectation)."""
    module = kl_loss_module(perturbed=False)
    loss, _ = module.rl_loss(PROMPTS)
    loss.backward()
    grads = [p.grad.abs().max() for p in module.model.parameters() if p.grad is not None]
    assert grads and max(grads) < 1e-6


def test_the_kl_loss_term_pulls_the_policy_back_to_the_reference() -> None:
    module = kl_loss_module(perturbed=True)
    before = [module.rl_loss(PROMPTS)[1]["train/kl"] for _ in range(3)]
    fit_rounds(module, PROMPTS, rounds=10, batch=4)
    after = [module.rl_loss(PROMPTS)[1]["train/kl"] for _ in range(3)]
    assert sum(after) < 0.75 * sum(before), (before, after)
