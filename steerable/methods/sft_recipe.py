"""The supervised fine-tuning recipe (loss on assistant tokens only, LoRA by default) and its before/after
report, shared by every method that fine-tunes on replies: SFT itself, the warm start of online methods,
SteerLM's attribute-conditioned SFT, PCM's experts, and the reports of preference methods. It lives beside the
method packages, not in one of them, so no method imports another method's modules to reuse it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from steerable.backbone import load_backbone
from steerable.backbone.adapters import reference_policy, save_model
from steerable.config.schema import ConfigError
from steerable.data.loaders import load_records, split_records
from steerable.data.prompts import ALL, HeldOut, prompt_sets
from steerable.data.records import Messages, as_messages
from steerable.data.tokenize import PaddingCollator, TokenizedSet, tokenize_messages
from steerable.generation import Engine, settings_from
from steerable.methods.base import FINAL_MODEL_DIR, RunContext
from steerable.methods.fitting import build_loaders, fit_module, optim_settings
from steerable.pipeline import StageSummary
from steerable.report import Report
from steerable.training.lm_module import CausalLMModule


def train_sft(ctx: RunContext) -> StageSummary:
    """SFT on the replies of the run's data (also the warm start of online methods)."""
    cfg = ctx.cfg
    _, tokenizer = ctx.backbone()
    train_records, val_records = split_records(load_records(cfg.data), cfg.data)
    train, val = (
        tokenize_messages(tokenizer, [as_messages(r) for r in records], cfg.data, cfg.model.end_of_turn)
        for records in (train_records, val_records)
    )
    return fit_sft(ctx, train, val)


def fit_sft(ctx: RunContext, train: TokenizedSet, val: TokenizedSet, metadata: dict | None = None) -> dict:
    """Fit the LM loss on `ctx`'s backbone and save the result to checkpoints/final (the shared SFT recipe)."""
    cfg, method = ctx.cfg, ctx.cfg.method
    model, tokenizer = ctx.backbone()
    if not train.examples:
        raise ConfigError(
            f"data.path={cfg.data.path or cfg.data.hub_id}: no training examples left, all dropped by the "
            f"length policy (data.too_long={getattr(cfg.data.too_long, 'value', cfg.data.too_long)}, data.max_length={cfg.data.max_length}); "
            "raise data.max_length or use data.too_long=truncate"
        )
    sampler, train_loader, val_loader = build_loaders(
        ctx, train.examples, val.examples, PaddingCollator(tokenizer.pad_token_id)
    )
    module = CausalLMModule(model, optim_settings(ctx), sampler=sampler, batch_size=method.batch_size)
    fit = fit_module(ctx, module, train_loader, val_loader, validate_first=True)
    if fit.is_global_zero:
        meta = {"method": method.name, "base_model": cfg.model.name, "steps": fit.steps, **(metadata or {})}
        save_model(model, tokenizer, ctx.run_dir / FINAL_MODEL_DIR, metadata=meta, state_dict=fit.state_dict)
    return {
        **fit.summary(),
        "train_examples": len(train.examples),
        "val_examples": len(val.examples),
        "truncated": train.stats.truncated,
        "dropped": train.stats.dropped_too_long + train.stats.dropped_no_target,
    }


def report_prompts(ctx: RunContext, tokenizer: PreTrainedTokenizerBase) -> list[Messages]:
    """The configured prompts, else held-out contexts (training ones without a held-out split) short enough
    to leave room for the reply."""
    cfg = ctx.cfg
    if cfg.report.prompts:
        return [[{"role": "user", "content": p}] for p in cfg.report.prompts][: cfg.report.num_samples]
    n = cfg.report.num_samples
    budget = cfg.data.max_length - cfg.report.sampling.max_new_tokens
    return prompt_sets(cfg.data, tokenizer, budget, limit=n, held_out=HeldOut(n, ALL))[1]


def before_and_after(
    ctx: RunContext, prompts_for: Callable[[RunContext, Any], list]
) -> tuple[list, list, list]:
    """The report's prompts (`prompts_for(ctx, tokenizer)`) and the replies (report.* sampling settings) of the
    starting model and of the trained one: with LoRA the start is the same model with its adapter switched
    off; full fine-tuning loads the base again."""
    model, tokenizer = ctx.trained_model()
    prompts = prompts_for(ctx, tokenizer)
    settings = settings_from(ctx.cfg.report.sampling, seed=ctx.cfg.seed, batch_size=len(prompts) or 1)
    engine = Engine(config=ctx.cfg.generation)
    after = engine.sampler(model, tokenizer).generate(prompts, settings)
    if isinstance(model, PeftModel):
        with reference_policy(model):
            before = engine.sampler(model, tokenizer).generate(prompts, settings)
    else:
        before = engine.sampler(load_backbone(ctx.cfg.model)[0], tokenizer).generate(prompts, settings)
    return prompts, before, after


def close_report(
    ctx: RunContext, report: Report, prompts: list, before: list, after: list, before_is: str
) -> dict:
    """The sample replies before and after training, then report.md written whole; the stage's summary."""
    s = ctx.cfg.report.sampling
    samples = report.before_after(
        prompts,
        before,
        after,
        f"Greedy={not s.do_sample}, max_new_tokens={s.max_new_tokens}. 'Before' is {before_is}.",
    )
    path = report.write(ctx.run_dir / "report.md")
    return {"report": str(path), "samples": samples}


def setup_rows(ctx: RunContext, train: dict, method: str) -> dict[str, object]:
    """The report's Setup section of a run that trains a policy with LoRA or in full (SFT and the methods on it)."""
    cfg = ctx.cfg
    lora = cfg.model.lora
    return {
        "run folder": ctx.run_dir,
        "method": method,
        "model": cfg.model.name,
        "data": cfg.data.name,
        "hardware": f"{cfg.hardware.name} ({cfg.hardware.precision.value})",
        "seed": cfg.seed,
        "LoRA": f"r={lora.r}, alpha={lora.alpha}" if lora.enabled else "off (full)",
        "trainable / frozen params": f"{train.get('trainable_params')} / {train.get('frozen_params')}",
    }
