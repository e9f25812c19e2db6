"""SuperHF's stages: `train` runs the superbatch loop under Lightning; `eval` compares the trained policy with
the initial one, best-of-n sampling and any baseline runs on held-out prompts judged by the gold reward."""

from __future__ import annotations

import math

import numpy as np
from peft import PeftModel

from steerable.backbone.adapters import frozen_reference, save_model
from steerable.data.records import user_text
from steerable.data.tokenize import end_of_turn_id
from steerable.generation import Engine
from steerable.methods.base import FINAL_MODEL_DIR, RunContext
from steerable.methods.benchmark import eval_stage as benchmark_eval_stage
from steerable.methods.benchmark import in_suite
from steerable.methods.fitting import fit_module
from steerable.methods.superhf.config import SuperHFConfig
from steerable.methods.superhf.data import prompt_split, sampling
from steerable.methods.superhf.evaluate import EvalSetup, run_evaluation
from steerable.methods.superhf.loss import KLSettings
from steerable.methods.superhf.module import Rollout, Scorer, SuperHFModule, SuperHFSettings
from steerable.methods.superhf.rewards import run_scorers
from steerable.pipeline import StageResults, StageSummary
from steerable.report import Report
from steerable.training.lm_module import OptimSettings
from steerable.training.online import PromptFeed
from steerable.training.sampler import shuffled_loader

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
    eot_id = end_of_turn_id(tokenizer, cfg.model.end_of_turn)
    module = SuperHFModule(
        model,
        OptimSettings(m.lr, m.weight_decay, m.warmup_steps, m.scheduler, total_steps=superbatches),
        settings,
        Rollout(engine, tokenizer, train_score, eot_id, ctx.autocast),
        evaluate=fixed_prompt_eval(
            tokenizer,
            eval_prompts[: m.eval_prompts],
            m,
            cfg.seed,
            train_score,
            gold_score,
            engine,
        ),
        feed=PromptFeed(sampler, m.prompt_accumulation),
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


def eval_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    """The run's report: setup, training summary, then the held-out comparison (superhf/ holds the files)."""
    if in_suite(ctx):  # an arm of a benchmark suite: the leaderboard's evaluator, on this run
        return benchmark_eval_stage(ctx, done)
    cfg, m = ctx.cfg, ctx.cfg.method
    train = done.require("train")
    model, tokenizer = ctx.trained_model()
    report = Report(f"{cfg.task_name}: SuperHF on {cfg.model.name} / {cfg.data.name}")
    report.section("Setup").key_values(
        {
            "run folder": ctx.run_dir,
            "train reward": m.reward,
            "gold reward": m.gold_reward,
            "prompts x completions per superbatch": f"{m.prompt_accumulation} x {m.completions_per_prompt}",
            "kept per prompt": m.top_k,
            "kl_coef / direction / aggregation": f"{m.kl_coef} / {m.kl_direction} / {m.kl_aggregation}",
            "superbatches": train.get("superbatches"),
            "optimizer steps": train.get("steps"),
            "training time (s)": train.get("fit_seconds"),
            "skipped invalid losses": train.get("skipped_losses"),
            "hardware": f"{cfg.hardware.name} ({cfg.hardware.precision.value})",
        }
    )
    out_dir = ctx.run_dir / "superhf"
    setup = EvalSetup(
        m,
        cfg.data,
        cfg.reward,
        num_prompts=m.eval_prompts,
        seed=cfg.seed,
        device=ctx.device.type,
        engine=Engine(cfg.model.end_of_turn, cfg.generation),
        autocast=ctx.autocast,
    )
    result = run_evaluation(model, tokenizer, setup, run_dir=ctx.run_dir, out_dir=out_dir, report=report)
    path = report.write(ctx.run_dir / "report.md")
    return {"report": str(path), "results": str(out_dir / "results.json"), "arms": result["arms"]}
