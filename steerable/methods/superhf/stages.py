"""SuperHF's stages: `train` runs the superbatch loop under Lightning; `eval` compares the trained policy with
the initial one, best-of-n sampling and any baseline runs on held-out prompts judged by the gold reward."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from steerable.backbone.adapters import frozen_reference, save_model
from steerable.config.schema import ConfigError, DataConfig
from steerable.data.prompts import SystemPrompt, prompt_sets
from steerable.data.records import Messages, user_text
from steerable.data.tokenize import end_of_turn_id
from steerable.generation import Engine, GenerationSettings, settings_from
from steerable.methods.base import FINAL_MODEL_DIR, RunContext
from steerable.methods.fitting import fit_module
from steerable.methods.superhf.config import SUPERHF_REWARD_REQUIRED, SuperHFConfig
from steerable.methods.superhf.loop import KLSettings, Rollout, Scorer, SuperHFModule, SuperHFSettings
from steerable.pipeline import StageResults, StageSummary
from steerable.rewards.base import RewardSource, build_reward_source
from steerable.training.lm_module import OptimSettings
from steerable.training.sampler import shuffled_loader

# ------------------------------------------------------------------------------------------- rewards


def reward_source(rewards: dict, key: str, which: str, device: str = "cpu") -> RewardSource:
    """`method.<which>` names a source of the run's `reward` group, or a reward/attribute model run folder."""
    if key in rewards:
        return build_reward_source(rewards[key])
    if Path(key).exists():
        return build_reward_source({"type": "checkpoint", "path": key, "device": device})
    raise ConfigError(
        f"method.{which}={key!r} is neither a reward source of this run (reward=[...] gives {sorted(rewards)}) "
        "nor an existing reward model run folder"
    )


def scorer(source: RewardSource, output: str | None, which: str) -> Scorer:
    """One column of a reward source as (user prompts, completions) -> list of floats."""
    if output is not None and output not in source.names:
        raise ConfigError(
            f"method.reward_output={output!r} is not an output of method.{which} ({source.names})"
        )
    column = source.names.index(output) if output else 0

    def score(prompts: list[str], texts: list[str]) -> list[float]:
        return source.score(prompts, texts)[:, column].tolist()

    return score


def run_scorers(m: SuperHFConfig, rewards: dict, device: str = "cpu") -> tuple[Scorer, Scorer | None]:
    """The train reward and the gold judge; checked before any sampling (the train stage starts here)."""
    if not m.reward:
        raise ConfigError(SUPERHF_REWARD_REQUIRED)
    train = scorer(reward_source(rewards, m.reward, "reward", device), m.reward_output, "reward")
    if not m.gold_reward:
        return train, None
    return train, scorer(reward_source(rewards, m.gold_reward, "gold_reward", device), None, "gold_reward")


# ------------------------------------------------------------------------------------------- prompts


def prompt_split(
    m: SuperHFConfig, data: DataConfig, tokenizer: PreTrainedTokenizerBase
) -> tuple[list[Messages], list[Messages]]:
    """SuperHF's prompts (behind its system prompt, optionally the first turn only): the first num_prompts
    for training; the held-out split, else the last eval_prompts training prompts, for evaluation."""
    return prompt_sets(
        data,
        tokenizer,
        data.max_length - m.max_new_tokens,
        transform=SystemPrompt(m.system_prompt, m.first_turn_only),
        limit=m.num_prompts,
        held_out_fallback=m.eval_prompts,
        required=True,
    )


def sampling(m: SuperHFConfig, n: int, seed: int | None) -> GenerationSettings:
    """n samples per prompt; SuperHF's own `top_k` counts kept samples, so it is not read as top-k sampling."""
    return settings_from(
        m,
        keys=("max_new_tokens", "temperature", "top_p"),
        do_sample=True,
        num_return_sequences=n,
        batch_size=max(1, m.generation_batch_size // n),
        seed=seed,
    )


# --------------------------------------------------------------------------------------------- train


def fixed_prompt_eval(
    tokenizer,
    prompts: list[list[dict]],
    m: SuperHFConfig,
    seed: int,
    train: Scorer,
    gold: Scorer | None,
    engine: Engine,
):
    """Mean train (and gold) reward of `eval_samples` seeded samples per fixed held-out prompt: the run's
    progress curve. The same seed at every point makes successive points differ by the policy, not the draw."""

    def evaluate(model) -> dict[str, float]:
        settings = sampling(m, m.eval_samples, seed)
        completions = engine.sampler(model, tokenizer).generate(prompts, settings)
        users = [user_text(prompts[c.prompt_index]) for c in completions]
        texts = [c.text for c in completions]
        values = {"train_reward": float(np.mean(train(users, texts)))}
        if gold is not None:
            values["gold_reward"] = float(np.mean(gold(users, texts)))
        return values

    return evaluate


def superhf_settings(m: SuperHFConfig, gradient_clip: float | None) -> SuperHFSettings:
    """The loop's settings from the method config (sampling without a fixed seed: each superbatch draws anew)."""
    return SuperHFSettings(
        completions_per_prompt=m.completions_per_prompt,
        top_k=m.top_k,
        minibatch_size=m.batch_size,
        generation=sampling(m, m.completions_per_prompt, None),
        kl=KLSettings(m.kl_coef, m.kl_direction, m.kl_aggregation, m.kl_positions, m.kl_clamp),
        trim=m.trim,
        length_penalty=m.length_penalty,
        inverse_loss_penalty=m.inverse_loss_penalty,
        gradient_clip=gradient_clip,
        eval_every=m.eval_every,
    )


def train_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    cfg, m = ctx.cfg, ctx.cfg.method
    model, tokenizer = ctx.backbone()
    train_prompts, eval_prompts = prompt_split(m, cfg.data, tokenizer)
    # one pass over the prompts, at most trainer.max_steps superbatches (debug=fast: 2)
    train_prompts = train_prompts[: cfg.trainer.max_steps * m.prompt_accumulation]
    train_score, gold_score = run_scorers(m, cfg.reward, ctx.device.type)
    superbatches = math.ceil(len(train_prompts) / m.prompt_accumulation)
    settings = superhf_settings(m, cfg.trainer.gradient_clip_val)
    reference = None
    if m.kl_coef >= 0 and not isinstance(model, PeftModel):
        reference = frozen_reference(model)  # full fine-tuning: the KL needs the starting weights kept apart
    engine = Engine(cfg.model.end_of_turn, cfg.generation)
    # every prompt once, the last superbatch possibly smaller (the scheduler counts ceil(prompts / accumulation))
    sampler, loader = shuffled_loader(train_prompts, m.prompt_accumulation, seed=cfg.seed, drop_last=False)
    module = SuperHFModule(
        model,
        tokenizer,
        OptimSettings(m.lr, m.weight_decay, m.warmup_steps, m.scheduler, total_steps=superbatches),
        settings,
        Rollout(engine, train_score, end_of_turn_id(tokenizer, cfg.model.end_of_turn), ctx.autocast),
        evaluate=fixed_prompt_eval(
            tokenizer,
            eval_prompts[: m.eval_prompts],
            m,
            cfg.seed,
            train_score,
            gold_score,
            engine,
        ),
        sampler=sampler,
        prompts_per_step=m.prompt_accumulation,
        reference=reference,
    )
    # One epoch over the prompts; clipping happens inside the step (manual optimization).
    fit = fit_module(ctx, module, loader, None)
    if fit.is_global_zero:
        meta = {"method": m.name, "base_model": cfg.model.name, "superbatches": superbatches}
        save_model(model, tokenizer, ctx.run_dir / FINAL_MODEL_DIR, metadata=meta, state_dict=fit.state_dict)
    return {
        **fit.summary(),
        "superbatches": superbatches,
        "train_prompts": len(train_prompts),
        "eval_prompts": min(len(eval_prompts), m.eval_prompts),
        "skipped_losses": module.skipped_losses,
    }
