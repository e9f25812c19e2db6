"""Supervised fine-tuning: loss on assistant tokens only, LoRA by default. Stages: train -> report.

SteerLM's attribute-conditioned SFT and SuperHF's FeedME baseline reuse this recipe with other data.
"""

from __future__ import annotations

import itertools
import logging

from peft import PeftModel

from steerable.backbone import load_backbone
from steerable.backbone.adapters import reference_policy, save_model
from steerable.data.loaders import load_records, split_records
from steerable.data.records import Conversation, PreferencePair, PromptRecord
from steerable.data.tokenize import PaddingCollator, end_of_turn_id, tokenize_dataset, tokenize_prompt
from steerable.generation import GenerationSettings, HFSampler
from steerable.methods.base import FINAL_MODEL_DIR, RunContext
from steerable.methods.fitting import build_loaders, fit_module, optim_settings
from steerable.report import Report
from steerable.training.lm_module import CausalLMModule

log = logging.getLogger(__name__)


def as_messages(record: Conversation | PreferencePair) -> list[dict[str, str]]:
    """SFT target of a record: a conversation as is, or a preference pair's context plus its chosen reply."""
    if isinstance(record, Conversation):
        return record.messages
    if isinstance(record, PreferencePair):
        return [*record.prompt_messages, {"role": "assistant", "content": record.chosen}]
    raise TypeError(f"SFT cannot train on {type(record).__name__} records")


def prompt_of(record: Conversation | PreferencePair | PromptRecord) -> list[dict[str, str]]:
    """The context before the last assistant reply: what a held-out sample is generated from."""
    if isinstance(record, PromptRecord):
        return record.messages
    messages = as_messages(record)
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last]


def train_stage(ctx: RunContext, summaries: dict[str, dict]) -> dict:
    cfg, method = ctx.cfg, ctx.cfg.method
    model, tokenizer = ctx.backbone()
    records = load_records(cfg.data)
    train_records, val_records = split_records(records, cfg.data)
    eot = end_of_turn_id(tokenizer, cfg.model.end_of_turn)
    too_long = cfg.data.too_long.value
    train_set, length_stats = tokenize_dataset(
        tokenizer, [as_messages(r) for r in train_records], cfg.data.max_length, too_long, eot
    )
    val_set, _ = tokenize_dataset(
        tokenizer, [as_messages(r) for r in val_records], cfg.data.max_length, too_long, eot
    )
    if not train_set:
        raise ValueError(
            f"no training examples left from data={cfg.data.name} (all dropped by the length policy)"
        )

    sampler, train_loader, val_loader = build_loaders(
        ctx, train_set, val_set, PaddingCollator(tokenizer.pad_token_id)
    )
    module = CausalLMModule(model, optim_settings(ctx), sampler=sampler, batch_size=method.batch_size)
    fit = fit_module(ctx, module, train_loader, val_loader, validate_first=True)
    if fit.is_global_zero:
        metadata = {"method": method.name, "base_model": cfg.model.name, "steps": fit.steps}
        save_model(
            model, tokenizer, ctx.run_dir / FINAL_MODEL_DIR, metadata=metadata, state_dict=fit.state_dict
        )
    return {
        **fit.summary(),
        "train_examples": len(train_set),
        "val_examples": len(val_set),
        "truncated": length_stats.truncated,
        "dropped": length_stats.dropped_too_long + length_stats.dropped_no_target,
    }


def report_prompts(ctx: RunContext, tokenizer) -> list[list[dict[str, str]]]:
    """The configured prompts, else held-out contexts short enough to leave room for the reply."""
    cfg = ctx.cfg
    if cfg.report.prompts:
        return [[{"role": "user", "content": p}] for p in cfg.report.prompts][: cfg.report.num_samples]
    records = load_records(cfg.data)
    _, val_records = split_records(records, cfg.data)
    budget = cfg.data.max_length - cfg.report.max_new_tokens
    fitting = (
        p for p in map(prompt_of, val_records or records) if len(tokenize_prompt(tokenizer, p)) <= budget
    )
    return list(itertools.islice(fitting, cfg.report.num_samples))


def report_stage(ctx: RunContext, summaries: dict[str, dict]) -> dict:
    cfg = ctx.cfg
    model, tokenizer = ctx.trained_model()
    prompts = report_prompts(ctx, tokenizer)
    settings = GenerationSettings(
        max_new_tokens=cfg.report.max_new_tokens,
        do_sample=cfg.report.do_sample,
        temperature=cfg.report.temperature,
        top_p=cfg.report.top_p,
        seed=cfg.seed,
        batch_size=len(prompts) or 1,
    )
    after = HFSampler(model, tokenizer).generate(prompts, settings)
    if isinstance(model, PeftModel):
        with reference_policy(model):
            before = HFSampler(model, tokenizer).generate(prompts, settings)
    else:  # full fine-tuning: the starting point is the base model itself
        before = HFSampler(load_backbone(cfg.model)[0], tokenizer).generate(prompts, settings)

    train = summaries.get("train", {})
    report = Report(f"{cfg.task_name}: {cfg.method.name} on {cfg.model.name} / {cfg.data.name}")
    report.section("Setup").key_values(
        {
            "run folder": ctx.run_dir,
            "method": cfg.method.name,
            "model": cfg.model.name,
            "data": cfg.data.name,
            "hardware": f"{cfg.hardware.name} ({cfg.hardware.precision.value})",
            "seed": cfg.seed,
            "LoRA": f"r={cfg.model.lora.r}, alpha={cfg.model.lora.alpha}"
            if cfg.model.lora.enabled
            else "off (full)",
            "trainable / frozen params": f"{train.get('trainable_params')} / {train.get('frozen_params')}",
        }
    )
    report.section("Training").key_values(
        {
            "optimizer steps": train.get("steps"),
            "train examples": train.get("train_examples"),
            "held-out examples": train.get("val_examples"),
            "held-out loss before": train.get("val_loss_before"),
            "held-out loss after": train.get("val_loss"),
            "last train loss": train.get("train_loss"),
            "truncated / dropped (length policy)": f"{train.get('truncated')} / {train.get('dropped')}",
            "training time (s)": train.get("fit_seconds"),
        }
    )
    rows = [[p[-1]["content"], b.text, a.text] for p, b, a in zip(prompts, before, after, strict=True)]
    report.section(
        "Sample generations",
        f"Greedy={not cfg.report.do_sample}, max_new_tokens={cfg.report.max_new_tokens}. "
        "'Before' is the starting model (for LoRA: the adapter switched off).",
    )
    report.table(["prompt", "before training", "after training"], rows)
    path = report.write(ctx.run_dir / "report.md")
    return {"report": str(path), "samples": len(rows)}


def build_stages(ctx: RunContext) -> dict:
    return {"train": lambda done: train_stage(ctx, done), "report": lambda done: report_stage(ctx, done)}
