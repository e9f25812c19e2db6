"""MODPO's stages: pairs (target-objective pairs, every reply scored) -> train (the MODPO loss at one weighting)."""

from __future__ import annotations

import logging
from typing import Any

from steerable.backbone.adapters import save_model
from steerable.backbone.loading import load_base_model, load_tokenizer
from steerable.data.tokenize import end_of_turn_id
from steerable.generation import Engine, GenerationSettings, settings_from
from steerable.methods.base import FINAL_MODEL_DIR, RunContext
from steerable.methods.dpo.module import Objective, preference_stats
from steerable.methods.dpo.pairs import PairCollator
from steerable.methods.fitting import build_loaders, fit_module, optim_settings
from steerable.methods.modpo.config import has_pairs, objective_weights, objectives_of
from steerable.methods.modpo.module import MarginCollator, MODPOModule, Weighting
from steerable.methods.modpo.pairs import (
    ScoredPair,
    candidate_replies,
    ranked_pairs,
    score_pairs,
    split_sources,
    tokenize_scored,
)
from steerable.pipeline import StageResults, StageSummary
from steerable.rewards.base import RewardStack, build_reward_source
from steerable.run_dir import read_jsonl, write_jsonl

log = logging.getLogger(__name__)

TRAIN_PAIRS, HELD_OUT_PAIRS = "pairs_train.jsonl", "pairs_heldout.jsonl"


def reward_stack(cfg: Any) -> RewardStack:
    """Every objective that is a reward source (the data's own preference is not one)."""
    names, _ = objectives_of(cfg)
    return RewardStack({n: build_reward_source(cfg.reward[n]) for n in names if n in cfg.reward})


def sampling(m: Any, seed: int) -> GenerationSettings:
    replies = max(m.sampled_replies, 1)
    return settings_from(
        m.sampling,
        num_return_sequences=replies,
        batch_size=max(1, m.generation_batch_size // replies),
        seed=seed,
    )


def pairs_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    """Score (or build and score) the training and held-out pairs and write them to the run folder."""
    cfg = ctx.cfg
    _, target = objectives_of(cfg)
    stack, from_data = reward_stack(cfg), has_pairs(cfg) and target not in cfg.reward
    train, held_out = split_sources(cfg.data, from_data)
    if from_data:
        made = [score_pairs(list(side), stack) for side in (train, held_out)]
    else:
        made = [
            ranked_pairs(*candidates, stack, target)
            for candidates in sampled_candidates(ctx, train, held_out)
        ]
    if not made[0]:
        raise ValueError(f"no training pair for target {target}: every prompt's candidate replies tie")
    write_jsonl(ctx.run_dir / TRAIN_PAIRS, made[0])
    write_jsonl(ctx.run_dir / HELD_OUT_PAIRS, made[1])
    return {
        "train_pairs": len(made[0]),
        "heldout_pairs": len(made[1]),
        "target": target,
        "from_data": from_data,
    }


def sampled_candidates(ctx: RunContext, *sides: list) -> list[tuple[list, list]]:
    """(contexts, candidate replies) per side: each record's own reply plus the starting model's samples."""
    cfg, m = ctx.cfg, ctx.cfg.method
    sampler = settings = None
    if m.sampled_replies:
        tokenizer = load_tokenizer(cfg.model)
        model = load_base_model(cfg.model, tokenizer).to(ctx.device)
        sampler = Engine(cfg.model.end_of_turn, cfg.generation).sampler(model, tokenizer)
        settings = sampling(m, cfg.seed)
    with ctx.autocast():
        return [candidate_replies(list(side), sampler, settings) for side in sides]


def train_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    cfg, m = ctx.cfg, ctx.cfg.method
    done.require("pairs")
    weights, (_, target) = objective_weights(cfg), objectives_of(cfg)
    model, tokenizer = ctx.backbone()
    train, held_out = (
        read_jsonl(ctx.run_dir / name, ScoredPair, "pairs") for name in (TRAIN_PAIRS, HELD_OUT_PAIRS)
    )
    weighting = Weighting.of(weights, target, set(train[0].chosen_scores) if train else set())
    eot, policy = (
        end_of_turn_id(tokenizer, cfg.model.end_of_turn),
        str(getattr(cfg.data.too_long, "value", cfg.data.too_long)),
    )
    margins = list(weighting.margin_names)
    train_tok, stats = tokenize_scored(tokenizer, train, margins, cfg.data.max_length, policy, eot)
    val_tok, _ = tokenize_scored(tokenizer, held_out, margins, cfg.data.max_length, policy, eot)
    if not train_tok:
        raise ValueError(f"no training pair left at data.max_length={cfg.data.max_length}")
    sampler, train_loader, val_loader = build_loaders(
        ctx, train_tok, val_tok, MarginCollator(tokenizer.pad_token_id)
    )
    module = MODPOModule(
        model, optim_settings(ctx), weighting, m.beta, sampler=sampler, batch_size=m.batch_size
    )
    fit = fit_module(ctx, module, train_loader, val_loader, validate_first=True)
    meta = {"kind": "modpo", "method": m.name, "base_model": cfg.model.name, "steps": fit.steps}
    meta |= {"objectives": list(weights), "target": target, "weights": weights, "beta": m.beta}
    if fit.is_global_zero:
        save_model(model, tokenizer, ctx.run_dir / FINAL_MODEL_DIR, metadata=meta, state_dict=fit.state_dict)
    summary = {**fit.summary(), "train_pairs": len(train_tok), "val_pairs": len(val_tok), "weights": weights}
    summary |= {"truncated": stats.truncated, "dropped": stats.dropped, "identical": stats.identical}
    trained, _ = ctx.trained_model()
    if fit.is_global_zero and val_tok:
        trained.to(ctx.device)
        heldout = preference_stats(
            trained,
            [p.tokens for p in val_tok],
            PairCollator(tokenizer.pad_token_id),
            Objective(m.beta),
            m.eval_batch_size,
            ctx.autocast(),
        )
        summary |= {f"heldout_{k}": v for k, v in heldout.items()}
    return summary
