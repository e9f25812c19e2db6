"""Stages shared by CLP, Rewarded Soups and RL: calibrate (freeze reward statistics from reference samples), train
(the policy-gradient trainer with the method's conditioning) and eval (the Pareto report, `evaluate.py`); the
trained policy loads through policy.py."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from peft import PeftModel

from steerable.backbone.adapters import load_named_adapters, save_model, wrap_lora
from steerable.backbone.loading import load_base_model, load_tokenizer
from steerable.config.schema import ConfigError
from steerable.data.records import user_text
from steerable.generation import Engine
from steerable.methods.base import FINAL_MODEL_DIR, RunContext, sub_context
from steerable.methods.benchmark import eval_stage as benchmark_eval_stage
from steerable.methods.benchmark import in_suite
from steerable.methods.clp.conditioning import (
    SHARED,
    ParameterConditioning,
    PromptConditioning,
    WeightSampler,
    build_conditioned_policy,
    objective_adapter,
    split_targets,
)
from steerable.methods.clp.config import objective_names
from steerable.methods.clp.data import prompt_split, sampling
from steerable.methods.clp.evaluate import ParetoSetup, evaluate_runs
from steerable.methods.clp.rewards import CALIBRATION, FrozenRewards, load_rewards
from steerable.methods.fitting import fit_module, optim_settings, write_diagnostics
from steerable.pipeline import StageResults, StageSummary
from steerable.report import Report
from steerable.rewards.base import RewardStack, build_reward_source
from steerable.rewards.normalize import ZScoreNormalizer
from steerable.run_dir import write_text_atomic
from steerable.training.online import PromptFeed
from steerable.training.policy_gradient import NoConditioning, PGSettings, PolicyGradientModule
from steerable.training.sampler import shuffled_loader

# ------------------------------------------------------------------------------------------- calibrate


def calibrate_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    """Sample the reference policy on training prompts, freeze z-score statistics, and fix the hypervolume
    reference point (the 5th percentile of each normalised reward) for every later evaluation."""
    cfg, m = ctx.cfg, ctx.cfg.method
    names = objective_names(cfg)
    tokenizer = load_tokenizer(cfg.model)
    base = load_base_model(ctx.model_config(), tokenizer).to(ctx.device)
    prompts = prompt_split(m, cfg.data, tokenizer)[0][: m.calibration_prompts]
    with ctx.autocast():
        sampler = Engine(cfg.model.end_of_turn, cfg.generation).sampler(base, tokenizer)
        completions = sampler.generate(prompts, sampling(m, 2, cfg.seed))
    stack = RewardStack({n: build_reward_source(cfg.reward[n]) for n in names})
    raw = stack.score(
        [user_text(prompts[c.prompt_index]) for c in completions], [c.text for c in completions]
    )
    normalizer = ZScoreNormalizer().fit(raw) if m.normalize == "zscore" else None
    normalized = normalizer(raw) if normalizer is not None else raw
    calibration = {
        "objectives": names,
        "normalizer": _plain(normalizer.state_dict()) if normalizer is not None else None,
        "reference_point": torch.quantile(normalized, 0.05, dim=0).tolist(),
        "reference_mean_raw": raw.mean(0).tolist(),
        "reference_samples": len(completions),
    }
    write_text_atomic(ctx.run_dir / CALIBRATION, json.dumps(calibration, indent=2))
    return {"path": str(ctx.run_dir / CALIBRATION), **calibration}


def _plain(state: dict) -> dict:
    return {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


# ----------------------------------------------------------------------------------------------- train


DIAGNOSTICS = (
    "Per step (steerable/training/diagnostics.py): rows grouped by their weighting's dominant objective (w_<name>); "
    "per group each objective's normalised reward, the KL estimate, and the correlation of the advantage with each "
    "objective's within-prompt deviation (the weighting reaches the update when w_a's advantage follows objective a). "
    "Step-wide: advantage spread, the weighted reward's and the KL penalty's within-prompt spread, each objective's "
    "within-prompt spread, the share of replies cut at max_new_tokens, and copy_spread (how far the adapter copies "
    "moved apart; 0 = every weighting gives the same policy)."
)


def fit_policy(
    ctx: RunContext,
    model: PeftModel,
    tokenizer,
    conditioning,
    rewards: FrozenRewards,
    metadata: dict,
    lr_scales: tuple[tuple[str, float], ...] = (),
) -> dict:
    """The shared policy-gradient run in ctx.run_dir; the adapters go to its checkpoints/final. `lr_scales`:
    (parameter-name marker, learning-rate factor) pairs, e.g. CLP's shared adapter."""
    cfg, m = ctx.cfg, ctx.cfg.method
    prompts = prompt_split(m, cfg.data, tokenizer)[0]
    sampler, loader = shuffled_loader(prompts, m.batch_size, seed=cfg.seed)
    settings = PGSettings(
        m.samples_per_prompt,
        sampling(m, m.samples_per_prompt),
        m.kl_coef,
        m.kl_in,
        m.objective_scale,
        Engine(cfg.model.end_of_turn, cfg.generation),
    )
    module = PolicyGradientModule(
        model,
        tokenizer,
        replace(optim_settings(ctx), lr_scales=lr_scales),
        settings,
        rewards,
        conditioning,
        PromptFeed(sampler, m.batch_size),
    )
    fit = fit_module(ctx, module, loader, None)
    if fit.is_global_zero:
        write_diagnostics(module.history, ctx.run_dir, f"{cfg.task_name}: {m.name} training", DIAGNOSTICS)
        meta = {"method": m.name, "base_model": cfg.model.name, "steps": fit.steps, **metadata}
        save_model(model, tokenizer, ctx.run_dir / FINAL_MODEL_DIR, metadata=meta, state_dict=fit.state_dict)
    return fit.summary()


def clp_train_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    cfg, m = ctx.cfg, ctx.cfg.method
    calibration = done.require("calibrate")
    names = calibration["objectives"]
    tokenizer = load_tokenizer(cfg.model)
    base = load_base_model(ctx.model_config(), tokenizer)
    shared, conditioned = split_targets(
        m.variant, cfg.model.lora.target_modules, m.attention_modules, m.output_module
    )
    model, mixer = build_conditioned_policy(
        base, cfg.model.lora, shared, conditioned, len(names), keep_shared=m.shared_lr_scale > 0
    )
    draw = WeightSampler(len(names), m.concentration, m.weights_per)
    conditioning = (
        ParameterConditioning(mixer, draw, stacked_sampling=True)
        if mixer is not None
        else PromptConditioning(names, draw)
    )
    adapters = list(model.peft_config)  # the shared adapter first, when the model kept one
    metadata = {
        "objectives": names,
        "variant": m.variant,
        "adapters": adapters,
        "conditioned": mixer.names if mixer is not None else [],
    }
    lr_scales = ((f".{SHARED}.", m.shared_lr_scale),) if SHARED in adapters and mixer is not None else ()
    summary = fit_policy(
        ctx, model, tokenizer, conditioning, load_rewards(cfg.reward, calibration), metadata, lr_scales
    )
    return {**summary, **metadata}


def soups_train_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    """One single-reward RL run per objective (its own folder), then the adapters side by side in one policy."""
    cfg = ctx.cfg
    calibration = done.require("calibrate")
    names = calibration["objectives"]
    rewards = load_rewards(cfg.reward, calibration)
    tokenizer = load_tokenizer(cfg.model)
    runs = {}
    for index, name in enumerate(names):
        sub = sub_context(ctx, f"single_{name}")
        final = sub.run_dir / FINAL_MODEL_DIR
        if not final.is_dir():
            model = wrap_lora(
                load_base_model(ctx.model_config(), tokenizer),
                cfg.model.lora,
                adapter_name=objective_adapter(index),
            )
            one_hot = torch.nn.functional.one_hot(torch.tensor(index), len(names)).float()
            runs[name] = fit_policy(
                sub, model, tokenizer, NoConditioning(one_hot), rewards, {"objectives": [name]}
            )
    folders = {
        objective_adapter(i): ctx.run_dir / f"single_{name}" / FINAL_MODEL_DIR / objective_adapter(i)
        for i, name in enumerate(names)
    }
    model = load_named_adapters(load_base_model(ctx.model_config(), tokenizer), folders)
    adapters = [objective_adapter(i) for i in range(len(names))]
    metadata = {
        "method": "rewarded_soups",
        "objectives": names,
        "variant": "soup",
        "adapters": adapters,
        "conditioned": adapters,
    }
    save_model(model, tokenizer, ctx.run_dir / FINAL_MODEL_DIR, metadata=metadata)
    return {"single_runs": runs, **metadata}


def rl_train_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    """One LoRA policy trained on a fixed weighting of the objectives; saved like SFT (loadable as a baseline)."""
    cfg, m = ctx.cfg, ctx.cfg.method
    calibration = done.require("calibrate")
    names = calibration["objectives"]
    weights = torch.tensor(list(m.weights) or [1.0 / len(names)] * len(names))
    if len(weights) != len(names) or (weights < 0).any() or abs(float(weights.sum()) - 1) > 1e-6:
        raise ConfigError(
            f"method.weights={list(m.weights)} must be {len(names)} non-negative numbers summing to 1"
        )
    tokenizer = load_tokenizer(cfg.model)
    model = wrap_lora(load_base_model(ctx.model_config(), tokenizer), cfg.model.lora)
    rewards = load_rewards(cfg.reward, calibration)
    summary = fit_policy(
        ctx,
        model,
        tokenizer,
        NoConditioning(weights),
        rewards,
        {"trained_on": names, "weights": weights.tolist()},
    )
    return {**summary, "objectives": names, "weights": weights.tolist()}


def eval_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    """This run and `method.eval.compare` runs on one weight grid: report.md, pareto/ with the plot and numbers."""
    if in_suite(ctx):  # an arm of a benchmark suite: the leaderboard's evaluator, on this run
        return benchmark_eval_stage(ctx, done)
    cfg, m = ctx.cfg, ctx.cfg.method
    train, calibration = done.require("train"), done.require("calibrate")
    report = Report(f"{cfg.task_name}: {m.name} on {cfg.model.name} / {cfg.data.name}")
    report.section("Setup").key_values(
        {
            "run folder": ctx.run_dir,
            "objectives": ", ".join(calibration["objectives"]),
            "variant": getattr(m, "variant", "rewarded soups (one run per objective)"),
            "RL": f"REINFORCE + leave-one-out over k={m.samples_per_prompt}, KL coef {m.kl_coef} in the {m.kl_in}",
            "budget": f"{cfg.trainer.max_steps} steps x {m.batch_size} prompts x {m.samples_per_prompt} samples"
            + (
                f" per objective run ({len(calibration['objectives'])} runs)"
                if m.name == "rewarded_soups"
                else ""
            ),
            "trainable parameters": train.get("trainable_params"),
            "training time (s)": train.get("fit_seconds"),
        }
    )
    prompts = prompt_split(m, cfg.data, load_tokenizer(cfg.model))[1][: m.eval.num_prompts]
    setup = ParetoSetup(
        prompts, m, load_rewards(cfg.reward, calibration), calibration, cfg.seed, ctx.autocast
    )
    result = evaluate_runs([ctx.run_dir, *map(Path, m.eval.compare)], setup, ctx.run_dir / "pareto", report)
    return {**result, "report": str(report.write(ctx.run_dir / "report.md"))}
