"""SteerLM's stages. Each writes its artifact into a folder of the run and can take an existing one instead:

    apm/        attribute prediction model (a scoring checkpoint)     <- method.apm=<attribute_model run>
    annotate/   train.jsonl / val.jsonl, labels predicted by the APM   <- method.annotated=<annotate folder>
    acsft/      attribute-conditioned SFT policy (+ the schema)
    baseline/   the same SFT recipe on the same replies, no labels
    bootstrap/  samples for high-quality labels, relabelled; second ACSFT round   <- method.policy=<steerlm run>
    steerlm2/   SteerLM 2.0: importance-weighted KL fit to P(a|x,y)·P(y|x) (loss.py), iter<k>/samples.jsonl
    checkpoints/final   the newest steerable policy (what steerable-generate and steerable-eval load)

A stage whose input is missing runs the stage that makes it first, so `method.stages=[acsft]` on a fresh
run annotates with `method.apm` and trains.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steerable.backbone import load_backbone
from steerable.backbone.adapters import save_model
from steerable.config.schema import ConfigError
from steerable.data.records import Conversation
from steerable.data.tokenize import tokenize_messages
from steerable.generation import Engine
from steerable.methods.base import FINAL_MODEL_DIR, RunContext, sub_context
from steerable.methods.benchmark import eval_stage as benchmark_eval_stage
from steerable.methods.benchmark import in_suite
from steerable.methods.fitting import build_loaders, fit_module, optim_settings
from steerable.methods.reward_models.config import AttributeModelConfig
from steerable.methods.reward_models.data import MISSING_LABEL, labelled_replies
from steerable.methods.reward_models.evaluate import attribute_metrics
from steerable.methods.reward_models.train import train_attribute_model
from steerable.methods.sft_recipe import fit_sft
from steerable.methods.steerlm.annotator import Annotator, label_agreement
from steerable.methods.steerlm.attributes import (
    AttributeSchema,
    conditioned_messages,
    default_values,
    parse_assignments,
)
from steerable.methods.steerlm.config import SteerLM2Config, SteerLMConfig
from steerable.methods.steerlm.data import data_split, found_attributes, run_names
from steerable.methods.steerlm.dials import Steering, evaluate_steering
from steerable.methods.steerlm.evaluate import (
    headline,
    held_out_prompts,
    scorers_for,
    stage_sections,
    sweep_settings,
)
from steerable.methods.steerlm.io import (
    attribute_model_dir,
    publish_policy,
    read_conversations,
    write_conversations,
)
from steerable.methods.steerlm.module import SteerLM2Module, collate_groups
from steerable.methods.steerlm.policy import SCHEMA_KEY, load_schema
from steerable.methods.steerlm.sampling import (
    RequestPool,
    high_quality_combinations,
    pad_id,
    relabelled_conversations,
    request_match_rate,
    sample_groups,
    sample_requests,
    write_bootstrap_samples,
)
from steerable.pipeline import SKIPPED_KEY, StageResults, StageSummary
from steerable.report import Report
from steerable.rewards.scoring_model import ScorerMeta, load_scorer
from steerable.run_dir import write_text_atomic

# ---------------------------------------------------------------------------------------------------- apm


def apm_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    method: SteerLMConfig = ctx.cfg.method
    if method.apm:
        folder = attribute_model_dir(method.apm)
        meta = ScorerMeta(**json.loads((folder / "steerable.json").read_text()))
        if meta.kind != "attribute_model":
            raise ConfigError(f"method.apm={method.apm} is a {meta.kind}, not an attribute model")
        return {
            "path": str(folder),
            "attributes": meta.names,
            "reused": True,
            "heldout": apm_heldout(ctx, folder),
        }
    train, _ = data_split(ctx)
    if not found_attributes(train):
        raise ConfigError(
            f"data={ctx.cfg.data.name} has no attribute labels to train an attribute model on; "
            "pass a trained one with method.apm=<attribute_model run>"
        )
    names = run_names(ctx, train)
    apm_method = AttributeModelConfig(
        attributes=names,
        value_range=[float(v) for v in method.value_range],
        pooling=method.apm_pooling,
        lr=method.apm_lr,
        batch_size=method.apm_batch_size,
        eval_batch_size=method.eval_batch_size,
        warmup_steps=method.warmup_steps,
        scheduler=method.scheduler,
    )
    sub = sub_context(ctx, "apm", apm_method, method.apm_steps)
    summary = train_attribute_model(sub)
    final = sub.run_dir / FINAL_MODEL_DIR
    return {**summary, "path": str(final), "heldout": apm_heldout(ctx, final), "reused": False}


def apm_heldout(ctx: RunContext, folder: Path) -> list[dict]:
    """Held-out MSE / correlations of the APM on this run's validation split, next to predicting the
    training mean (of this run's training split: the same split when the APM was trained on the same data)."""
    model, tokenizer, meta = load_scorer(folder)
    train, val = data_split(ctx)
    labels = np.array([row for _, _, row in labelled_replies(train, meta.names)]).reshape(-1, len(meta.names))
    means = [
        float(col[col != MISSING_LABEL].mean()) if (col != MISSING_LABEL).any() else None for col in labels.T
    ]
    with ctx.autocast():
        return attribute_metrics(
            model.to(ctx.device), tokenizer, meta, val, means, ctx.cfg.method.eval_batch_size
        )


# ----------------------------------------------------------------------------------------------- annotate


def annotate_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    method: SteerLMConfig = ctx.cfg.method
    if method.annotated:
        folder = Path(method.annotated)
        for name in ("train.jsonl", "val.jsonl"):
            if not (folder / name).is_file():
                raise ConfigError(
                    f"method.annotated={folder}: missing {name} (an `annotate` folder of a steerlm run)"
                )
        return {"path": str(folder), "reused": True}
    if method.labels == "human":
        return {SKIPPED_KEY: "method.labels=human: the data's own labels condition the SFT"}
    train, val = data_split(ctx)
    names = run_names(ctx, train)
    apm = str(done.artifact("apm"))
    annotator = Annotator.for_run(ctx, apm, names)
    out = ctx.run_dir / "annotate"
    summary: dict[str, Any] = {"path": str(out), "apm": apm, "attributes": names}
    for split, conversations in (("train", train), ("val", val)):
        annotated = annotator.annotate(conversations)
        originals = [[dict(t.attributes) for t in c.turns] for c in conversations]
        write_conversations(out / f"{split}.jsonl", annotated, originals)
        summary[split] = {
            "conversations": len(annotated),
            "agreement_with_data_labels": label_agreement(conversations, annotated, names),
        }
    return summary


def labelled_split(ctx: RunContext, done: StageResults) -> tuple[list[Conversation], list[Conversation]]:
    """The conversations attribute-conditioned SFT trains on: APM-annotated (paper) or with the data's labels."""
    if ctx.cfg.method.labels == "human" and not ctx.cfg.method.annotated:
        return data_split(ctx)
    folder = done.artifact("annotate")
    return read_conversations(folder / "train.jsonl"), read_conversations(folder / "val.jsonl")


# --------------------------------------------------------------------------------------------------- acsft


def build_schema(ctx: RunContext, conversations: list[Conversation]) -> AttributeSchema:
    method: SteerLMConfig = ctx.cfg.method
    names = run_names(ctx, conversations)
    value_range = (int(method.value_range[0]), int(method.value_range[1]))
    draft = AttributeSchema(tuple(names), value_range, method.label_start)
    labelled = [
        draft.clamp_round(t.attributes) for c in conversations for t in c.turns if t.role == "assistant"
    ]
    chosen = parse_assignments(method.inference_defaults, "method.inference_defaults")
    draft.resolve({**default_values(names, value_range, []), **chosen}, "method.inference_defaults")
    return replace(draft, defaults={**default_values(names, value_range, labelled), **chosen})


def conditioned_sft(
    sub: RunContext,
    train: list[Conversation],
    val: list[Conversation],
    schema: AttributeSchema | None,
    backbone: tuple | None = None,
) -> dict:
    """One SFT run in the sub-run `sub` (`sub_context`: its folder, recipe and steps): with the label prefix
    (masked) when `schema` is given, plain otherwise."""
    if backbone is not None:
        sub._backbone = backbone
    _, tokenizer = sub.backbone()

    def encode(conversations):
        data, end_of_turn = sub.cfg.data, sub.cfg.model.end_of_turn
        if schema is None:
            return tokenize_messages(tokenizer, [c.messages for c in conversations], data, end_of_turn)
        pairs = [conditioned_messages(c, schema) for c in conversations]
        return tokenize_messages(tokenizer, [m for m, _ in pairs], data, end_of_turn, [p for _, p in pairs])

    metadata = {SCHEMA_KEY: schema.to_dict()} if schema is not None else {}
    summary = fit_sft(sub, encode(train), encode(val), metadata=metadata)
    return {**summary, "path": str(sub.run_dir / FINAL_MODEL_DIR)}


def acsft_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    train, val = labelled_split(ctx, done)
    schema = build_schema(ctx, train)
    summary = conditioned_sft(sub_context(ctx, "acsft"), train, val, schema)
    publish_policy(Path(summary["path"]), ctx.run_dir)
    example = next(
        (t.attributes for c in train for t in c.turns if t.role == "assistant" and t.attributes), {}
    )
    return {
        **summary,
        "schema": schema.to_dict(),
        "label_example": schema.prefix(schema.clamp_round(example)),
    }


def baseline_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    """The paper's SFT baseline: the same replies and recipe, no attribute labels."""
    train, val = labelled_split(ctx, done)
    return conditioned_sft(sub_context(ctx, "baseline"), train, val, schema=None)


# ----------------------------------------------------------------------------------------------- bootstrap


def policy_dir(ctx: RunContext, done: StageResults) -> Path:
    """The attribute-conditioned policy to build on: method.policy, else this run's (training it if needed)."""
    if ctx.cfg.method.policy:
        folder = Path(ctx.cfg.method.policy)
        folder = folder / FINAL_MODEL_DIR if (folder / FINAL_MODEL_DIR).is_dir() else folder
        load_schema(folder)  # fails clearly when it is not a SteerLM policy
        return folder
    for stage in ("steerlm2", "bootstrap"):  # the newest one this run has, other than the one running now
        if stage != done.stage and stage in done:
            return done.artifact(stage)
    return done.artifact("acsft")


def bootstrap_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    cfg, method = ctx.cfg, ctx.cfg.method
    settings = method.bootstrap
    source = policy_dir(ctx, done)
    schema = load_schema(source)
    train, val = labelled_split(ctx, done)
    condition = parse_assignments(settings.condition, "method.bootstrap.condition")
    combos = high_quality_combinations(schema, train, condition)
    model, tokenizer = load_backbone(cfg.model, adapter_dir=source, trainable=True)
    model.to(ctx.device)
    pool = RequestPool(schema, train, combos)
    prompts, requested, completions = sample_requests(ctx, model, tokenizer, pool, settings, cfg.seed)
    kept = [c for c in completions if c.text.strip()]
    annotator = Annotator.for_run(ctx, str(done.artifact("apm")), list(schema.names))
    relabelled = annotator.predict([prompts[c.prompt_index] for c in kept], [c.text for c in kept])
    samples = relabelled_conversations(prompts, kept, relabelled)
    write_bootstrap_samples(ctx.run_dir / "bootstrap" / "samples.jsonl", prompts, requested, kept, relabelled)
    round_two = replace(method, lr=settings.lr or method.lr)
    sub = sub_context(ctx, "bootstrap", round_two, settings.max_steps)
    summary = conditioned_sft(sub, samples, val, schema, backbone=(model, tokenizer))
    publish_policy(Path(summary["path"]), ctx.run_dir)
    return {
        **summary,
        "from_policy": str(source),
        "high_quality_combinations": len(combos),
        "samples": len(kept),
        "empty_samples_dropped": len(completions) - len(kept),
        "relabel_equals_request": request_match_rate(schema, requested, kept, relabelled),
    }


def steerlm2_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    cfg, method = ctx.cfg, ctx.cfg.method
    s: SteerLM2Config = method.steerlm2
    source = policy_dir(ctx, done)
    schema = load_schema(source)
    train, _ = labelled_split(ctx, done)
    combos = high_quality_combinations(
        schema,
        train,
        parse_assignments(s.condition, "method.steerlm2.condition"),
        "method.steerlm2.condition",
    )
    policy, tokenizer = load_backbone(cfg.model, adapter_dir=source, trainable=True)
    prior, _ = load_backbone(cfg.model, adapter_dir=done.artifact("baseline"))
    policy.to(ctx.device)
    prior.to(ctx.device)
    annotator = Annotator.for_run(ctx, str(done.artifact("apm")), list(schema.names))
    pad, pool = pad_id(tokenizer), RequestPool(schema, train, combos)
    recipe = replace(method, lr=s.lr, scheduler="constant", warmup_steps=0, batch_size=s.groups_per_step)
    rounds, state_dict = [], None
    for iteration in range(1, s.iterations + 1):
        folder = f"steerlm2/iter{iteration}"
        groups, records = sample_groups(ctx, policy, prior, tokenizer, annotator, pool, iteration)
        write_text_atomic(
            ctx.run_dir / folder / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in records)
        )
        steps = s.epochs * math.ceil(len(groups) / s.groups_per_step)
        sub = sub_context(ctx, folder, recipe, steps)
        sampler, loader, _ = build_loaders(sub, groups, [], collate_groups(pad))
        module = SteerLM2Module(policy, optim_settings(sub), sampler=sampler, batch_size=s.groups_per_step)
        fit = fit_module(sub, module, loader, None)
        state_dict = fit.state_dict
        weights = torch.stack([g["weights"] for g in groups])
        rounds.append(
            {
                **fit.summary(),
                "groups": len(groups),
                "distance": fit.metrics.get("train/distance"),
                # how far the target is from uniform: 1 = uniform weights, 1/n = one reply takes all
                "effective_sample_fraction": float((1 / (weights**2).sum(-1)).mean() / weights.shape[1]),
            }
        )
    meta = {
        "method": method.name,
        "base_model": cfg.model.name,
        "stage": "steerlm2",
        SCHEMA_KEY: schema.to_dict(),
    }
    final = ctx.run_dir / "steerlm2" / FINAL_MODEL_DIR
    save_model(policy, tokenizer, final, metadata=meta, state_dict=state_dict)
    publish_policy(final, ctx.run_dir)
    return {
        "path": str(final),
        "from_policy": str(source),
        "iterations": rounds,
        "high_quality_combinations": len(combos),
    }


def eval_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    if in_suite(ctx):  # an arm of a benchmark suite: the leaderboard's evaluator, on this run
        return benchmark_eval_stage(ctx, done)
    cfg, method = ctx.cfg, ctx.cfg.method
    policy = policy_dir(ctx, done)
    schema = load_schema(policy)
    model, tokenizer = load_backbone(cfg.model, adapter_dir=policy)
    model.to(ctx.device)
    baseline = None
    if "baseline" in done:
        baseline = load_backbone(cfg.model, adapter_dir=done.artifact("baseline"))
        baseline[0].to(ctx.device)
    apm = str(done.artifact("apm")) if "apm" in done else method.apm and str(attribute_model_dir(method.apm))
    annotator_args = {"batch_size": method.eval_batch_size, "device": ctx.device, "autocast": ctx.autocast}
    out_dir = ctx.run_dir / "steerability"
    report = Report(f"{cfg.task_name}: SteerLM on {cfg.model.name} / {cfg.data.name}")
    stage_sections(report, ctx, done, schema)
    steering = Steering(
        schema,
        held_out_prompts(cfg.data, tokenizer, cfg.data.max_length, method.eval),
        sweep_settings(schema, method.eval, cfg.seed),
        scorers_for(schema, apm, cfg.reward, annotator_args),
        engine=Engine(cfg.model.end_of_turn, cfg.generation),
        autocast_factory=ctx.autocast,
    )
    result = evaluate_steering(
        (model, tokenizer), steering, ctx.run_dir, report, plot_dir=out_dir, baseline=baseline
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "results.json", json.dumps(result, indent=2, sort_keys=True, default=str))
    report.write(ctx.run_dir / "report.md")
    return {"report": str(ctx.run_dir / "report.md"), "policy": str(policy), **headline(result)}
