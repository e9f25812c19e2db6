"""DPO's stages: train (LoRA policy against its adapter-off reference) -> eval (numbers and samples)."""

from __future__ import annotations

import logging
from typing import Any

from steerable.backbone.adapters import save_model
from steerable.config.schema import ConfigError
from steerable.data.prompts import fitting_prompts
from steerable.data.tokenize import end_of_turn_id
from steerable.methods.base import FINAL_MODEL_DIR, RunContext
from steerable.methods.dpo.module import DPOModule, Objective, preference_stats
from steerable.methods.dpo.pairs import PairCollator, PairStats, TokenizedPair, split_pairs, tokenize_pairs
from steerable.methods.fitting import build_loaders, fit_module, optim_settings
from steerable.methods.sft_recipe import before_and_after, close_report, setup_rows
from steerable.pipeline import StageResults, StageSummary
from steerable.report import Report, format_number

log = logging.getLogger(__name__)


def tokenized_split(
    ctx: RunContext, tokenizer: Any
) -> tuple[list[TokenizedPair], list[TokenizedPair], PairStats]:
    """Training and held-out pairs under the run's length policy (stats are the training side's)."""
    data = ctx.cfg.data
    eot = end_of_turn_id(tokenizer, ctx.cfg.model.end_of_turn)
    policy = str(getattr(data.too_long, "value", data.too_long))
    train_pairs, val_pairs = split_pairs(data)
    train, stats = tokenize_pairs(tokenizer, train_pairs, data.max_length, policy, eot)
    val, _ = tokenize_pairs(tokenizer, val_pairs, data.max_length, policy, eot)
    if not train:
        raise ConfigError(
            f"data.path={data.path or data.hub_id}: no training pairs left (data={data.name}): {len(train_pairs)} "
            f"read, {stats.dropped} without reply tokens and {stats.identical} whose chosen and rejected replies "
            f"are identical at data.max_length={data.max_length}"
        )
    return train, val, stats


def train_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    cfg, method = ctx.cfg, ctx.cfg.method
    model, tokenizer = ctx.backbone()
    train, val, stats = tokenized_split(ctx, tokenizer)
    collate = PairCollator(tokenizer.pad_token_id)
    sampler, train_loader, val_loader = build_loaders(ctx, train, val, collate)
    objective = Objective.of(method)
    module = DPOModule(model, optim_settings(ctx), objective, sampler=sampler, batch_size=method.batch_size)
    fit = fit_module(ctx, module, train_loader, val_loader, validate_first=True)
    if fit.is_global_zero:
        meta = {"kind": "dpo", "method": method.name, "base_model": cfg.model.name, "steps": fit.steps}
        meta |= {"beta": objective.beta, "loss_type": objective.loss_type}
        save_model(model, tokenizer, ctx.run_dir / FINAL_MODEL_DIR, metadata=meta, state_dict=fit.state_dict)
    summary = {
        **fit.summary(),
        "train_pairs": len(train),
        "val_pairs": len(val),
        "truncated": stats.truncated,
        "dropped": stats.dropped,
        "identical": stats.identical,
    }
    trained, _ = ctx.trained_model()  # every rank: after a sharded fit this waits for rank 0's save
    if fit.is_global_zero and val:
        heldout = heldout_preferences(ctx, trained, val, collate, objective)
        summary |= {f"heldout_{k}": v for k, v in heldout.items()}
    return summary


def heldout_preferences(ctx: RunContext, model: Any, val: list, collate: Any, objective: Objective) -> dict:
    """The trained policy vs its reference on the held-out pairs, on the run's inference device."""
    model.to(ctx.device)  # Lightning hands the model back on the CPU after fitting
    stats = preference_stats(model, val, collate, objective, ctx.cfg.method.eval_batch_size, ctx.autocast())
    log.info(
        "held-out pairs: reward accuracy %.3f, margin %.3f; log-prob accuracy %.3f -> %.3f",
        stats["reward_accuracy"],
        stats["reward_margin"],
        stats["reference_logp_accuracy"],
        stats["policy_logp_accuracy"],
    )
    return stats


# --------------------------------------------------------------------------------------------------- eval


def report_prompts(ctx: RunContext, tokenizer: Any) -> list[list[dict[str, str]]]:
    """The configured prompts, else contexts of held-out pairs short enough to leave room for the reply."""
    cfg = ctx.cfg
    if cfg.report.prompts:
        return [[{"role": "user", "content": p}] for p in cfg.report.prompts][: cfg.report.num_samples]
    train, val = split_pairs(cfg.data)
    budget = cfg.data.max_length - cfg.report.sampling.max_new_tokens
    return fitting_prompts(val or train, tokenizer, budget, cfg.report.num_samples)


def eval_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    cfg = ctx.cfg
    prompts, before, after = before_and_after(ctx, report_prompts)
    train = done.require("train")
    report = Report(f"{cfg.task_name}: dpo on {cfg.model.name} / {cfg.data.name}")
    report.section("Setup").key_values(setup_rows(ctx, train, method_text(cfg.method)))
    report.section(
        "Training",
        "Held-out numbers are on the held-out pairs at the end of training. Implicit reward = "
        "beta * (log pi - log pi_ref) of a reply; it is 0 for every reply before training (policy = reference). "
        "Log-prob preference: how often log pi(chosen) > log pi(rejected), for the reference (before) and the "
        "trained policy (after).",
    ).key_values(training_rows(train))
    return close_report(
        ctx,
        report,
        prompts,
        before,
        after,
        "the reference: the same model with the LoRA adapter switched off",
    )


def method_text(method: Any) -> str:
    return (
        f"dpo (loss {Objective.of(method).loss_type}, beta={method.beta}, "
        f"label_smoothing={method.label_smoothing}, average_logprobs={method.average_logprobs})"
    )


def training_rows(train: dict) -> dict[str, object]:
    def pair(key: str, after: str | None = None) -> str:
        return f"{format_number(train.get(key))} -> {format_number(train.get(after or key))}"

    return {
        "optimizer steps": train.get("steps"),
        "train pairs / held-out pairs": f"{train.get('train_pairs')} / {train.get('val_pairs')}",
        "truncated / dropped / identical pairs": f"{train.get('truncated')} / {train.get('dropped')} / "
        f"{train.get('identical')}",
        "held-out DPO loss before -> after": pair("val_loss_before", "val_loss"),
        "last train loss": train.get("train_loss"),
        "held-out implicit reward accuracy (after)": train.get("heldout_reward_accuracy"),
        "held-out implicit reward margin (after)": train.get("heldout_reward_margin"),
        "held-out log-prob preference accuracy before -> after": pair(
            "heldout_reference_logp_accuracy", "heldout_policy_logp_accuracy"
        ),
        "held-out log-prob margin before -> after": pair(
            "heldout_reference_logp_margin", "heldout_policy_logp_margin"
        ),
        "training time (s)": train.get("fit_seconds"),
    }
