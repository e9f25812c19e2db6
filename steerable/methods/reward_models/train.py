"""Training a reward model or an attribute model (a ScoringModel: backbone + linear head) with the shared
Lightning recipe. Its own module because SteerLM's apm stage trains its attribute model with the same recipe."""

from __future__ import annotations

import numpy as np
from omegaconf import OmegaConf

from steerable.data.loaders import load_records, split_records
from steerable.data.records import PreferencePair
from steerable.methods.base import FINAL_MODEL_DIR, RunContext
from steerable.methods.fitting import build_loaders, fit_module, optim_settings
from steerable.methods.reward_models.data import (
    MISSING_LABEL,
    attribute_names,
    collate_labels,
    collate_pairs,
    label_examples,
    labelled_replies,
    pair_examples,
)
from steerable.methods.reward_models.module import AttributeModelModule, RewardModelModule
from steerable.rewards.scoring_model import ScorerMeta, ScoringModel, save_scorer


def _meta(ctx: RunContext, kind: str, names: list[str], value_range=None) -> ScorerMeta:
    model = OmegaConf.to_container(OmegaConf.structured(ctx.cfg.model), enum_to_str=True)
    return ScorerMeta(
        kind=kind,
        names=names,
        pooling=ctx.cfg.method.pooling,
        value_range=value_range,
        max_length=ctx.cfg.data.max_length,
        model=model,
    )


def train_reward_model(ctx: RunContext) -> dict:
    cfg, method = ctx.cfg, ctx.cfg.method
    backbone, tokenizer = ctx.backbone()
    records = load_records(cfg.data)
    if not records or not isinstance(records[0], PreferencePair):
        raise ValueError(
            f"method=reward_model needs preference pairs; data={cfg.data.name} gave other records"
        )
    train_pairs, val_pairs = split_records(records, cfg.data)
    train_set = pair_examples(train_pairs, tokenizer, cfg.data.max_length)
    val_set = pair_examples(val_pairs, tokenizer, cfg.data.max_length)
    model = ScoringModel(backbone, 1, pooling=method.pooling)
    sampler, train_loader, val_loader = build_loaders(
        ctx, train_set, val_set, collate_pairs(tokenizer.pad_token_id)
    )
    module = RewardModelModule(
        model, optim_settings(ctx), margin=method.margin, sampler=sampler, batch_size=method.batch_size
    )
    fit = fit_module(ctx, module, train_loader, val_loader)
    if fit.is_global_zero:
        meta = _meta(ctx, "reward_model", ["reward"])
        save_scorer(model, tokenizer, meta, ctx.run_dir / FINAL_MODEL_DIR, state_dict=fit.state_dict)
    return {**fit.summary(), "train_pairs": len(train_set), "val_pairs": len(val_set), "half": cfg.data.half}


def train_attribute_model(ctx: RunContext) -> dict:
    cfg, method = ctx.cfg, ctx.cfg.method
    backbone, tokenizer = ctx.backbone()
    train_records, val_records = split_records(load_records(cfg.data), cfg.data)
    names = attribute_names(train_records, list(method.attributes))
    train_set = label_examples(labelled_replies(train_records, names), tokenizer, cfg.data.max_length)
    val_set = label_examples(labelled_replies(val_records, names), tokenizer, cfg.data.max_length)
    model = ScoringModel(backbone, len(names), pooling=method.pooling)
    sampler, train_loader, val_loader = build_loaders(
        ctx, train_set, val_set, collate_labels(tokenizer.pad_token_id)
    )
    module = AttributeModelModule(model, optim_settings(ctx), sampler=sampler, batch_size=method.batch_size)
    fit = fit_module(ctx, module, train_loader, val_loader)
    if fit.is_global_zero:
        meta = _meta(ctx, "attribute_model", names, value_range=list(method.value_range))
        save_scorer(model, tokenizer, meta, ctx.run_dir / FINAL_MODEL_DIR, state_dict=fit.state_dict)
    return {
        **fit.summary(),
        "attributes": names,
        "train_samples": len(train_set),
        "val_samples": len(val_set),
        "train_means": _label_means(train_set, len(names)),
    }


def _label_means(examples: list[dict], k: int) -> list[float | None]:
    labels = np.array([e["labels"] for e in examples], dtype=float).reshape(-1, k)
    means = []
    for j in range(k):
        col = labels[:, j][labels[:, j] != MISSING_LABEL]
        means.append(float(col.mean()) if col.size else None)
    return means
