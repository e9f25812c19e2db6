"""RiC's stages: offline (score the data's replies, write the scores into the prompts, conditioned SFT) ->
online (rounds of: generate for targets around the front, score, keep the samples that extend it, fine-tune)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import torch

from steerable.backbone import load_backbone
from steerable.backbone.adapters import save_model
from steerable.config.method import Scheduler
from steerable.data.loaders import load_records, split_records
from steerable.data.records import Conversation, PreferencePair, prompt_of, user_text
from steerable.data.tokenize import TokenizedSet, tokenize_messages
from steerable.generation import Engine, settings_from
from steerable.methods.base import FINAL_MODEL_DIR, RunContext, sub_context
from steerable.methods.ric.config import objective_names
from steerable.methods.ric.scores import ScoreScale, extends_front, front_targets, named_tags
from steerable.methods.sft_recipe import fit_sft
from steerable.pipeline import StageResults, StageSummary
from steerable.policies.runs import final_metadata
from steerable.rewards.base import RewardStack, build_reward_source
from steerable.run_dir import read_jsonl, write_jsonl

log = logging.getLogger(__name__)

META_KEY = "ric"  # checkpoints/final/steerable.json: {"ric": {"scale": ..., "mapping": ...}}
OFFLINE_TRAIN, OFFLINE_HELD_OUT, KEPT = "ric_train.jsonl", "ric_heldout.jsonl", "kept.jsonl"


@dataclass
class ScoredReply:
    """A reply, its context and its normalised scores (objective order)."""

    context: list[dict]
    reply: str
    scores: list[float]

    def conditioned(self, scale: ScoreScale) -> list[dict]:
        return [
            *scale.prompted(self.context, self.scores),
            {"role": "assistant", "content": self.reply},
        ]


def replies_of(records: list[Any]) -> tuple[list[list[dict]], list[str]]:
    """(contexts, replies): a conversation's last reply; both replies of a pair (as RiC uses HH-RLHF)."""
    contexts, replies = [], []
    for record in records:
        if isinstance(record, PreferencePair):
            for reply in (record.chosen, record.rejected):
                contexts.append(record.prompt_messages)
                replies.append(reply)
        elif isinstance(record, Conversation) and record.turns[-1].role == "assistant":
            contexts.append(prompt_of(record))
            replies.append(record.turns[-1].content)
    return contexts, replies


def raw_scores(stack: RewardStack, contexts: list[list[dict]], replies: list[str]) -> torch.Tensor:
    return stack.score([user_text(c) for c in contexts], replies)


def scored(contexts: list, replies: list[str], normalised: torch.Tensor) -> list[ScoredReply]:
    return [ScoredReply(c, r, s.tolist()) for c, r, s in zip(contexts, replies, normalised, strict=True)]


def tokenized(ctx: RunContext, tokenizer: Any, replies: list[ScoredReply], scale: ScoreScale) -> TokenizedSet:
    """SFT examples: the scores sit in the user turn, which gets no loss; only the reply is learned."""
    conversations = [r.conditioned(scale) for r in replies]
    return tokenize_messages(tokenizer, conversations, ctx.cfg.data, ctx.cfg.model.end_of_turn)


def reward_stack(cfg: Any, names: list[str]) -> RewardStack:
    return RewardStack({n: build_reward_source(cfg.reward[n]) for n in names})


def policy_metadata(scale: ScoreScale, method: Any) -> dict:
    mapping = str(getattr(method.mapping, "value", method.mapping))
    return {"kind": "ric", META_KEY: {"scale": scale.to_dict(), "mapping": mapping}}


# ------------------------------------------------------------------------------------------------ offline


def offline_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    cfg, m = ctx.cfg, ctx.cfg.method
    names = objective_names(cfg)
    stack = reward_stack(cfg, names)
    train_records, held_out_records = split_records(load_records(cfg.data), cfg.data)
    (train_c, train_r), (val_c, val_r) = replies_of(train_records), replies_of(held_out_records)
    if not train_r:
        raise ValueError(f"data={cfg.data.name} has no replies to score")
    raw = raw_scores(stack, train_c, train_r)
    tags = named_tags(names) if m.tags == "names" else ()
    scale = ScoreScale.fit(names, raw, m.normalize == "zscore", m.decimals, tags)
    train = scored(train_c, train_r, scale.normalise(raw))
    held_out = scored(val_c, val_r, scale.normalise(raw_scores(stack, val_c, val_r)))
    write_jsonl(ctx.run_dir / OFFLINE_TRAIN, train)
    write_jsonl(ctx.run_dir / OFFLINE_HELD_OUT, held_out)
    _, tokenizer = ctx.backbone()
    summary = fit_sft(
        ctx,
        tokenized(ctx, tokenizer, train, scale),
        tokenized(ctx, tokenizer, held_out, scale),
        metadata=policy_metadata(scale, m),
    )
    return {**summary, "objectives": names, "scale": scale.to_dict(), "raw_mean": raw.mean(0).tolist()}


# ------------------------------------------------------------------------------------------------- online


def generate_round(
    ctx: RunContext, model: Any, tokenizer: Any, scale: ScoreScale, pool: list[ScoredReply], seed: int
) -> list[ScoredReply]:
    """Replies to training prompts under targets around the front, scored with the training statistics."""
    cfg, m = ctx.cfg, ctx.cfg.method
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(pool), (m.online_samples,), generator=generator).tolist()
    contexts = [pool[i].context for i in picks]
    targets = front_targets(m.online_samples, scale.low, scale.high, generator, scale.decimals)
    shown = [scale.prompted(c, t.tolist()) for c, t in zip(contexts, targets, strict=True)]
    settings = settings_from(m.sampling, batch_size=m.generation_batch_size, seed=seed)
    model.to(ctx.device)
    with ctx.autocast():
        completions = (
            Engine(cfg.model.end_of_turn, cfg.generation).sampler(model, tokenizer).generate(shown, settings)
        )
    completions = [c for c in completions if c.text.strip()]
    replies_contexts = [contexts[c.prompt_index] for c in completions]
    texts = [c.text for c in completions]
    stack = reward_stack(cfg, list(scale.names))
    return scored(replies_contexts, texts, scale.normalise(raw_scores(stack, replies_contexts, texts)))


def front_of(replies: list[ScoredReply], quantile: float) -> list[ScoredReply]:
    """The replies that extend the front (at least one score at or above its quantile)."""
    if not replies:
        return []
    keep = extends_front(torch.tensor([r.scores for r in replies]), quantile)
    return [r for r, k in zip(replies, keep.tolist(), strict=True) if k]


def origin_subset(offline: list[ScoredReply], m: Any, seed: int) -> list[ScoredReply]:
    """The front-filtered offline data, a random `origin_samples` of it when set (as the reference mixes)."""
    kept = front_of(offline, m.quantile)
    if m.origin_samples is None or m.origin_samples >= len(kept):
        return kept
    order = torch.randperm(len(kept), generator=torch.Generator().manual_seed(seed)).tolist()
    return [kept[i] for i in order[: m.origin_samples]]


def online_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    """`online_iterations` rounds, each continuing the previous adapter; the last one becomes the run's policy."""
    cfg, m = ctx.cfg, ctx.cfg.method
    done.require("offline")
    meta = final_metadata(ctx.run_dir)
    scale = ScoreScale.from_dict(meta[META_KEY]["scale"])
    if not m.online_iterations:
        return {"rounds": []}
    offline = read_jsonl(ctx.run_dir / OFFLINE_TRAIN, ScoredReply, "offline")
    held_out = read_jsonl(ctx.run_dir / OFFLINE_HELD_OUT, ScoredReply, "offline")
    model, tokenizer = load_backbone(cfg.model, adapter_dir=ctx.run_dir / FINAL_MODEL_DIR, trainable=True)
    online_method = replace(m, lr=m.online_lr, scheduler=Scheduler["constant"], warmup_steps=0)
    steps = m.online_steps or max(1, cfg.trainer.max_steps // 5)
    pool: list[ScoredReply] = []
    rounds = []
    for i in range(1, m.online_iterations + 1):
        sub = sub_context(ctx, f"online_{i}", method=online_method, max_steps=steps)
        if (sub.run_dir / FINAL_MODEL_DIR).is_dir() and (sub.run_dir / KEPT).is_file():
            # a finished round of an interrupted run
            pool += read_jsonl(sub.run_dir / KEPT, ScoredReply, "online")
            model, tokenizer = load_backbone(
                cfg.model, adapter_dir=sub.run_dir / FINAL_MODEL_DIR, trainable=True
            )
            continue
        fresh = generate_round(ctx, model, tokenizer, scale, offline, cfg.seed + i)
        kept = front_of(fresh, m.quantile)
        sub.run_dir.mkdir(parents=True, exist_ok=True)
        write_jsonl(sub.run_dir / KEPT, kept)
        pool += kept
        merged = origin_subset(offline, m, cfg.seed + i) + pool
        sub._backbone = (model, tokenizer)
        fit = fit_sft(
            sub,
            tokenized(ctx, tokenizer, merged, scale),
            tokenized(ctx, tokenizer, held_out, scale),
            metadata=policy_metadata(scale, m),
        )
        rounds.append(round_summary(fit, fresh, kept, len(merged)))
    save_model(
        model,
        tokenizer,
        ctx.run_dir / FINAL_MODEL_DIR,
        metadata={"method": m.name, **policy_metadata(scale, m)},
    )
    return {"rounds": rounds, "online_steps": steps}


def round_summary(fit: dict, fresh: list[ScoredReply], kept: list[ScoredReply], trained_on: int) -> dict:
    scores = torch.tensor([r.scores for r in fresh]) if fresh else torch.zeros(0)
    return {
        "generated": len(fresh),
        "kept": len(kept),
        "trained_on": trained_on,
        "generated_mean_scores": scores.mean(0).tolist() if fresh else [],
        "val_loss": fit.get("val_loss"),
        "steps": fit.get("steps"),
    }
