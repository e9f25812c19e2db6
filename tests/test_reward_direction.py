"""Reward-direction tests: each online method, run for a few rounds on the tiny model, moves its reward the way
its objective says. The rewards are dense character-class fractions (lowercase vs uppercase letters of the
reply), which a random byte-level model can move within a few rounds; they conflict (a character is one or the
other). Each compares means over several prompts and samples with a margin, under fixed seeds."""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import pytest
import torch

from steerable.backbone.loading import load_base_model, load_tokenizer
from steerable.config.schema import LoraConfig
from steerable.generation import GenerationSettings, make_sampler
from steerable.methods.clp.conditioning import (
    ParameterConditioning,
    PromptConditioning,
    build_conditioned_policy,
    split_targets,
)
from steerable.training.lm_module import OptimSettings
from steerable.training.online import OnlineModule
from steerable.training.policy_gradient import PGSettings, PolicyGradientModule
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
        ParameterConditioning(mixer, draw) if mixer else PromptConditioning(CaseRewards.names, draw)
    )
    settings = PGSettings(samples_per_prompt=4, generation=sampling(4), kl_coef=0.0)
    optim = OptimSettings(lr=lr, scheduler="constant", total_steps=100)
    module = PolicyGradientModule(
        model, tokenizer, optim, settings, CaseRewards(), conditioning, END, prompts_per_step=4
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
    from steerable.backbone.adapters import wrap_lora
    from steerable.data.tokenize import end_of_turn_id
    from steerable.generation import Engine
    from steerable.methods.superhf.loop import KLSettings, SuperHFModule, SuperHFSettings

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
        tokenizer,
        OptimSettings(lr=1e-2, scheduler="constant", total_steps=rounds),
        settings,
        lambda prompts, texts: fraction(texts, LOWER).tolist(),
        end_of_turn_id(tokenizer),
        Engine(END),
        prompts_per_step=4,
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
