"""SteerLM's stages. Each writes its artifact into a folder of the run and can take an existing one instead:

    apm/        attribute prediction model (a scoring checkpoint)     <- method.apm=<attribute_model run>
    annotate/   train.jsonl / val.jsonl, labels predicted by the APM   <- method.annotated=<annotate folder>
    acsft/      attribute-conditioned SFT policy (+ the schema)
    baseline/   the same SFT recipe on the same replies, no labels
    bootstrap/  samples for high-quality labels, relabelled; second ACSFT round   <- method.policy=<steerlm run>
    steerlm2/   SteerLM 2.0: importance-weighted KL fit to P(a|x,y)·P(y|x) (steerlm2.py), iter<k>/samples.jsonl
    checkpoints/final   the newest steerable policy (what steerable-generate and steerable-eval load)

A stage whose input is missing runs the stage that makes it first, so `method.stages=[acsft]` on a fresh
run annotates with `method.apm` and trains.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steerable.backbone import load_backbone
from steerable.backbone.adapters import atomic_directory
from steerable.config.schema import ConfigError
from steerable.data.loaders import load_jsonl_conversations, load_records, read_rows, split_records
from steerable.data.records import Conversation, PreferencePair, Turn, prompt_of
from steerable.data.tokenize import tokenize_messages
from steerable.generation import Engine, settings_from
from steerable.methods.base import FINAL_MODEL_DIR, RunContext, sub_context
from steerable.methods.reward_models.config import AttributeModelConfig
from steerable.methods.reward_models.data import MISSING_LABEL, labelled_replies
from steerable.methods.reward_models.evaluate import attribute_metrics, score_ids
from steerable.methods.reward_models.train import train_attribute_model
from steerable.methods.sft_recipe import fit_sft
from steerable.methods.steerlm.attributes import (
    AttributeSchema,
    conditioned_messages,
    default_values,
    parse_assignments,
    schema_names,
    steered_prompt,
)
from steerable.methods.steerlm.config import SteerLMConfig
from steerable.methods.steerlm.policy import SCHEMA_KEY, load_schema
from steerable.pipeline import StageResults, StageSummary
from steerable.rewards.scoring_model import ScorerMeta, load_scorer, render_scored, scorer_dir
from steerable.run_dir import write_text_atomic

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ helpers


def as_conversation(record: Conversation | PreferencePair) -> Conversation:
    """Preference pairs (HH-RLHF) take part as their chosen reply, as in the paper's HH annotation."""
    if isinstance(record, Conversation):
        return record
    if isinstance(record, PreferencePair):
        return Conversation(turns=[*record.context, Turn("assistant", record.chosen)], id=record.id)
    raise TypeError(f"SteerLM cannot train on {type(record).__name__} records")


def data_split(ctx: RunContext) -> tuple[list[Conversation], list[Conversation]]:
    train, val = split_records(load_records(ctx.cfg.data), ctx.cfg.data)
    return [as_conversation(r) for r in train], [as_conversation(r) for r in val]


def found_attributes(conversations: list[Conversation]) -> set[str]:
    return {n for c in conversations for t in c.turns if t.role == "assistant" for n in t.attributes}


def run_names(ctx: RunContext, conversations: list[Conversation]) -> list[str]:
    method: SteerLMConfig = ctx.cfg.method
    names = schema_names(method.preset, method.attributes, ctx.cfg.data.name, found_attributes(conversations))
    if not names:
        raise ConfigError(
            f"no attributes to steer: data={ctx.cfg.data.name} has no labels; set method.attributes=[...]"
        )
    return names


def publish_policy(source: Path, run_dir: Path) -> Path:
    """Copy a stage's policy to the run's checkpoints/final, atomically (the folder users load)."""
    target = run_dir / FINAL_MODEL_DIR
    with atomic_directory(target) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
    return target


def write_conversations(path: Path, conversations: list[Conversation], originals: list[list[dict]]) -> None:
    """JSON Lines in the `jsonl` data format (messages with attributes), original labels kept alongside."""
    lines = []
    for conv, original in zip(conversations, originals, strict=True):
        messages = []
        for turn, labels in zip(conv.turns, original, strict=True):
            message: dict[str, Any] = turn.as_message()
            if turn.role == "assistant":
                message["attributes"] = turn.attributes
                message["original_attributes"] = labels
            messages.append(message)
        lines.append(json.dumps({"id": conv.id, "group": conv.group, "messages": messages}))
    write_text_atomic(path, "\n".join(lines) + "\n")


def read_conversations(path: Path) -> list[Conversation]:
    return load_jsonl_conversations(read_rows(path), str(path))


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


def attribute_model_dir(path: str) -> Path:
    """`method.apm=`: an attribute_model run, a SteerLM run that trained one (its apm/ sub-run), or either's
    checkpoints/final folder."""
    for candidate in (Path(path), Path(path) / "apm"):
        try:
            return scorer_dir(candidate)
        except FileNotFoundError:
            continue
    raise ConfigError(
        f"method.apm={path} holds no attribute model: give an attribute_model run (outputs/attribute_model/"
        "<timestamp>), a SteerLM run that trained one (its apm/ stage) or their checkpoints/final folder"
    )


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


class Annotator:
    """The APM as SteerLM's labeller: predictions clamped to the range and rounded (NeMo's annotate script)."""

    def __init__(
        self,
        apm_path: str,
        names: list[str],
        value_range: Sequence[int],
        batch_size: int = 8,
        device: torch.device | str = "cpu",
        autocast: Callable[[], AbstractContextManager] = nullcontext,
    ) -> None:
        self.model, self.tokenizer, self.meta = load_scorer(apm_path)
        self.model.to(device)
        missing = [n for n in names if n not in self.meta.names]
        if missing:
            raise ConfigError(
                f"the attribute model at {apm_path} predicts {self.meta.names}; the run needs {missing} "
                "(the run's attributes come from its data= and method.attributes / method.preset: pass the "
                "data the attribute model was trained on)"
            )
        self.schema = AttributeSchema(tuple(names), (int(value_range[0]), int(value_range[1])))
        self.columns = [self.meta.names.index(n) for n in names]
        self.batch_size = batch_size
        self.autocast = autocast

    @classmethod
    def for_run(cls, ctx: RunContext, apm_path: str, names: list[str]) -> Annotator:
        method = ctx.cfg.method
        return cls(apm_path, names, method.value_range, method.eval_batch_size, ctx.device, ctx.autocast)

    def raw(self, contexts: list[list[dict]], replies: list[str]) -> np.ndarray:
        """Unrounded predictions [N, outputs of the APM] (used as a measurement in the steerability eval)."""
        sequences = [
            render_scored(self.tokenizer, c, r, self.meta.max_length)
            for c, r in zip(contexts, replies, strict=True)
        ]
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # less padding per batch
        with self.autocast():
            scores = score_ids(
                self.model, [sequences[i] for i in order], self.tokenizer.pad_token_id, self.batch_size
            )
        raw = np.empty((len(sequences), len(self.meta.names)))
        raw[order] = scores.numpy()
        return raw

    def predict(self, contexts: list[list[dict]], replies: list[str]) -> list[dict[str, int]]:
        raw = self.raw(contexts, replies)[:, self.columns]
        return [self.schema.clamp_round(dict(zip(self.schema.names, row, strict=True))) for row in raw]

    def annotate(self, conversations: list[Conversation]) -> list[Conversation]:
        """Every assistant turn gets predicted labels; identical (context, reply) pairs are scored once."""
        index: dict[str, int] = {}
        contexts, replies = [], []
        for conv in conversations:
            for key, context, reply in _assistant_turns(conv):
                if key not in index:
                    index[key] = len(replies)
                    contexts.append(context)
                    replies.append(reply)
        predictions = self.predict(contexts, replies) if replies else []
        annotated = []
        for conv in conversations:
            labels = iter([predictions[index[key]] for key, _, _ in _assistant_turns(conv)])
            turns = [
                Turn(t.role, t.content, dict(next(labels)) if t.role == "assistant" else {})
                for t in conv.turns
            ]
            annotated.append(replace(conv, turns=turns))
        return annotated


def _assistant_turns(conv: Conversation):
    """(dedup key, context messages, reply) of each assistant turn, in order."""
    for i, turn in enumerate(conv.turns):
        if turn.role == "assistant":
            context = [t.as_message() for t in conv.turns[:i]]
            yield json.dumps([context, turn.content]), context, turn.content


def label_agreement(original: list[Conversation], annotated: list[Conversation], names: list[str]) -> dict:
    """How far the APM's labels are from the data's own, per attribute (the paper's denoising step)."""
    out = {}
    for name in names:
        pairs = [
            (a.attributes[name], round(o.attributes[name]))
            for oc, ac in zip(original, annotated, strict=True)
            for o, a in zip(oc.turns, ac.turns, strict=True)
            if o.role == "assistant" and name in o.attributes and name in a.attributes
        ]
        if pairs:
            diffs = np.array([abs(p - h) for p, h in pairs], dtype=float)
            out[name] = {
                "n": len(pairs),
                "exact": float(np.mean(diffs == 0)),
                "mean_abs_diff": float(diffs.mean()),
            }
    return out


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
        return {"skipped": "method.labels=human: the data's own labels condition the SFT"}
    train, val = data_split(ctx)
    names = run_names(ctx, train)
    annotator = Annotator.for_run(ctx, done.require("apm")["path"], names)
    out = ctx.run_dir / "annotate"
    summary: dict[str, Any] = {"path": str(out), "apm": done["apm"]["path"], "attributes": names}
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
    folder = Path(done.require("annotate")["path"])
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
    ctx: RunContext,
    folder: str,
    train: list[Conversation],
    val: list[Conversation],
    schema: AttributeSchema | None,
    method: Any = None,
    max_steps: int | None = None,
    backbone: tuple | None = None,
) -> dict:
    """One SFT run in `folder`: with the label prefix (masked) when `schema` is given, plain otherwise."""
    sub = sub_context(ctx, folder, method, max_steps)
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
    summary = conditioned_sft(ctx, "acsft", train, val, schema)
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
    return conditioned_sft(ctx, "baseline", train, val, schema=None)


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
            return Path(done[stage]["path"])
    return Path(done.require("acsft")["path"])


def high_quality_combinations(
    schema: AttributeSchema,
    train: list[Conversation],
    condition: dict,
    key: str = "method.bootstrap.condition",
) -> list[dict]:
    """V_hq: attribute combinations seen in the annotated training data that meet the condition (Eq. 3)."""
    unknown = sorted(set(condition) - set(schema.names))
    if unknown:
        raise ConfigError(f"{key} names {unknown}; the schema's attributes are {list(schema.names)}")
    seen = {
        tuple(sorted(values.items()))
        for c in train
        for t in c.turns
        if t.role == "assistant" and len(values := schema.clamp_round(t.attributes)) == len(schema.names)
    }
    hq = [dict(v) for v in sorted(seen) if all(dict(v)[k] == int(x) for k, x in condition.items())]
    if not hq:
        raise ConfigError(f"no labelled reply in the training data meets {key}={condition}; relax it")
    return hq


STEERED_SAMPLING = ("max_new_tokens", "temperature", "top_k", "top_p")


def sample_requests(
    ctx: RunContext,
    model,
    tokenizer,
    schema: AttributeSchema,
    train: list,
    combos: list[dict],
    section,
    seed: int,
) -> tuple[list[list[dict]], list[dict], list]:
    """Draw `section.num_prompts` training prompts with attribute values to ask for (from `combos`), then
    sample `section.samples_per_prompt` replies each with the trained label prefix, stopping before a new
    label. `section` is the stage's config (bootstrap: top-k sampling; SteerLM 2.0: top-p)."""
    prompts, requested = draw_requests(train, combos, section.num_prompts, random.Random(seed))
    texts = [steered_prompt(tokenizer, p, schema, v) for p, v in zip(prompts, requested, strict=True)]
    n = section.samples_per_prompt
    gen = settings_from(
        section,
        keys=STEERED_SAMPLING,
        do_sample=True,
        num_return_sequences=n,
        batch_size=max(1, ctx.cfg.method.eval.batch_size // n),
        stop=[schema.label_start],
        seed=seed,
    )
    with ctx.autocast():
        engine = Engine(ctx.cfg.model.end_of_turn, ctx.cfg.generation)
        completions = engine.sampler(model, tokenizer).generate(texts, gen)
    return prompts, requested, completions


def draw_requests(
    train: list, combos: list[dict], num_prompts: int, rng: random.Random
) -> tuple[list[list[dict]], list[dict]]:
    """Up to `num_prompts` training prompts, each with attribute values drawn from `combos` to ask for."""
    prompts = [prompt_of(c) for c in rng.sample(train, min(num_prompts, len(train)))]
    return prompts, [rng.choice(combos) for _ in prompts]


def relabelled_conversations(
    prompts: list[list[dict]], kept: list, relabelled: list[dict]
) -> list[Conversation]:
    """Each sampled reply as a training conversation, labelled with what the attribute model says it is."""
    return [
        Conversation(
            turns=[
                *(Turn(m["role"], m["content"]) for m in prompts[c.prompt_index]),
                Turn("assistant", c.text.strip(), labels),
            ],
            id=f"bootstrap-{i}",
        )
        for i, (c, labels) in enumerate(zip(kept, relabelled, strict=True))
    ]


def write_bootstrap_samples(
    path: Path, prompts: list[list[dict]], requested: list[dict], kept: list, relabelled: list[dict]
) -> None:
    """The bootstrap data set, one JSON line per reply: prompt, values asked for, reply, values found."""
    lines = [
        {
            "prompt": prompts[c.prompt_index],
            "requested": requested[c.prompt_index],
            "response": c.text,
            "relabelled": labels,
            "finish_reason": c.finish_reason,
        }
        for c, labels in zip(kept, relabelled, strict=True)
    ]
    write_text_atomic(path, "".join(json.dumps(line) + "\n" for line in lines))


def request_match_rate(
    schema: AttributeSchema, requested: list[dict], kept: list, relabelled: list[dict]
) -> float:
    """How often the relabelled values equal every requested value (nan without samples)."""
    if not kept:
        return float("nan")
    matches = [
        all(labels[k] == requested[c.prompt_index][k] for k in schema.names)
        for c, labels in zip(kept, relabelled, strict=True)
    ]
    return float(np.mean(matches))


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
    prompts, requested, completions = sample_requests(
        ctx, model, tokenizer, schema, train, combos, settings, cfg.seed
    )
    kept = [c for c in completions if c.text.strip()]
    annotator = Annotator.for_run(ctx, done.require("apm")["path"], list(schema.names))
    relabelled = annotator.predict([prompts[c.prompt_index] for c in kept], [c.text for c in kept])
    samples = relabelled_conversations(prompts, kept, relabelled)
    write_bootstrap_samples(ctx.run_dir / "bootstrap" / "samples.jsonl", prompts, requested, kept, relabelled)
    round_two = replace(method, lr=settings.lr or method.lr)
    summary = conditioned_sft(
        ctx, "bootstrap", samples, val, schema, round_two, settings.max_steps, backbone=(model, tokenizer)
    )
    publish_policy(Path(summary["path"]), ctx.run_dir)
    return {
        **summary,
        "from_policy": str(source),
        "high_quality_combinations": len(combos),
        "samples": len(kept),
        "empty_samples_dropped": len(completions) - len(kept),
        "relabel_equals_request": request_match_rate(schema, requested, kept, relabelled),
    }
