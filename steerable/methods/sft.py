"""Supervised fine-tuning: loss on assistant tokens only, LoRA by default. Stages: train -> report.

SteerLM's attribute-conditioned SFT and SuperHF's FeedME baseline reuse this recipe with other data.
"""

from __future__ import annotations

import itertools
import logging
import time

import torch
from peft import PeftModel

from steerable.backbone import load_backbone
from steerable.backbone.adapters import count_parameters, reference_policy, save_model
from steerable.data.loaders import load_records, split_records
from steerable.data.records import Conversation, PreferencePair, PromptRecord
from steerable.data.tokenize import PaddingCollator, end_of_turn_id, tokenize_dataset, tokenize_prompt
from steerable.generation import GenerationSettings, HFSampler
from steerable.methods.base import FINAL_MODEL_DIR, RunContext
from steerable.report import Report
from steerable.training.lm_module import CausalLMModule, OptimSettings
from steerable.training.sampler import ResumableSampler, make_loader
from steerable.training.trainer import (
    build_trainer,
    gathered_state_dict,
    merge_resumed_metrics,
    resume_checkpoint,
    set_aside_metrics,
)

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

    collate = PaddingCollator(tokenizer.pad_token_id)
    sampler = ResumableSampler(len(train_set), seed=cfg.seed)
    train_loader = make_loader(
        train_set,
        method.batch_size,
        collate,
        sampler=sampler,
        seed=cfg.seed,
        num_workers=cfg.data.num_workers,
        drop_last=len(train_set) >= method.batch_size,
    )
    val_loader = make_loader(val_set, method.eval_batch_size, collate, seed=cfg.seed) if val_set else None

    optim = OptimSettings(
        lr=method.lr,
        weight_decay=method.weight_decay,
        warmup_steps=method.warmup_steps,
        scheduler=method.scheduler,
        total_steps=cfg.trainer.max_steps,
    )
    module = CausalLMModule(model, optim, sampler=sampler, batch_size=method.batch_size)
    checkpoint = resume_checkpoint(ctx.run_dir) if ctx.resuming else None
    if checkpoint is not None:
        set_aside_metrics(ctx.run_dir)
    trainer = build_trainer(
        cfg.trainer,
        cfg.hardware,
        cfg.logger,
        ctx.run_dir,
        f"{cfg.task_name}/{ctx.run_dir.name}",
        model,
        ctx.hparams(model),
        ctx.callbacks,
    )
    val_before = None
    if checkpoint is None and val_loader is not None:
        val_before = trainer.validate(module, val_loader, verbose=False)[0].get("val/loss")
        module.train()  # validate() leaves modules in eval mode, which would switch dropout off in fit
    started = time.perf_counter()
    resumed_at = (
        torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"] if checkpoint else 0
    )
    trainer.fit(module, train_loader, val_loader, ckpt_path=str(checkpoint) if checkpoint else None)
    seconds = time.perf_counter() - started
    if checkpoint is not None and trainer.is_global_zero:
        merge_resumed_metrics(ctx.run_dir, resumed_at)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    state = gathered_state_dict(trainer)
    if trainer.is_global_zero:
        metadata = {"method": method.name, "base_model": cfg.model.name, "steps": trainer.global_step}
        save_model(model, tokenizer, ctx.run_dir / FINAL_MODEL_DIR, metadata=metadata, state_dict=state)
    counts = count_parameters(model)
    return {
        "steps": trainer.global_step,
        "train_examples": len(train_set),
        "val_examples": len(val_set),
        "truncated": length_stats.truncated,
        "dropped": length_stats.dropped_too_long + length_stats.dropped_no_target,
        "train_loss": metrics.get("train/loss"),
        "val_loss_before": val_before,
        "val_loss": metrics.get("val/loss"),
        "fit_seconds": round(seconds, 1),
        "trainable_params": counts.trainable,
        "frozen_params": counts.frozen,
        "resumed_from": str(checkpoint) if checkpoint else None,
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
