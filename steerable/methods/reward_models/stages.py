"""Reward model (Bradley–Terry) and attribute model (multi-attribute regression): stages train -> eval.

Both train a ScoringModel (backbone + linear head) with the shared Lightning recipe; they differ in data
(pairs vs labelled replies), loss and held-out metrics.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from steerable.data.loaders import load_records, split_records
from steerable.data.records import Conversation, PreferencePair
from steerable.data.tokenize import pad_rows
from steerable.evaluation.metrics import reward_accuracy, spearman
from steerable.methods.base import FINAL_MODEL_DIR, RunContext
from steerable.methods.fitting import build_loaders, fit_module, optim_settings
from steerable.pipeline import StageResults, StageSummary
from steerable.report import Report
from steerable.rewards.scoring_model import (
    ScorerMeta,
    ScoringModel,
    load_scorer,
    render_scored,
    save_scorer,
)
from steerable.training.lm_module import CausalLMModule, OptimSettings

log = logging.getLogger(__name__)

MISSING_LABEL = -100.0
# NeMo-Aligner's canonical attribute order (OASST + HelpSteer); other names follow alphabetically.
CANONICAL_ORDER = [
    "quality",
    "toxicity",
    "humor",
    "creativity",
    "violence",
    "helpfulness",
    "not_appropriate",
    "correctness",
    "coherence",
    "complexity",
    "verbosity",
]


# ----------------------------------------------------------------------------------------------- data


def pair_examples(pairs: list[PreferencePair], tokenizer, max_length: int) -> list[dict[str, list[int]]]:
    return [
        {
            "chosen": render_scored(tokenizer, p.prompt_messages, p.chosen, max_length),
            "rejected": render_scored(tokenizer, p.prompt_messages, p.rejected, max_length),
        }
        for p in pairs
    ]


def collate_pairs(pad_id: int):
    def collate(batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        ids, mask = pad_rows([b["chosen"] for b in batch] + [b["rejected"] for b in batch], pad_id)
        return {"input_ids": ids, "attention_mask": mask}

    return collate


def attribute_names(conversations: list[Conversation], requested: list[str]) -> list[str]:
    if requested:
        return list(requested)
    found = {name for c in conversations for t in c.turns if t.role == "assistant" for name in t.attributes}
    if not found:
        raise ValueError("method=attribute_model found no attribute labels in the data")
    known = [n for n in CANONICAL_ORDER if n in found]
    return known + sorted(found - set(known))


def labelled_replies(
    conversations: list[Conversation], names: list[str]
) -> list[tuple[list[dict], str, list[float]]]:
    """One sample per labelled assistant turn (context, reply, labels with -100 for missing), deduplicated:
    OASST threads of one tree share their prefixes, so the same reply appears in several threads."""
    seen: set[str] = set()
    samples = []
    for conv in conversations:
        for i, turn in enumerate(conv.turns):
            if turn.role != "assistant" or not any(n in turn.attributes for n in names):
                continue
            context = [t.as_message() for t in conv.turns[:i]]
            key = hashlib.sha1(repr((context, turn.content)).encode()).hexdigest()
            if key in seen:
                continue
            seen.add(key)
            labels = [float(turn.attributes[n]) if n in turn.attributes else MISSING_LABEL for n in names]
            samples.append((context, turn.content, labels))
    return samples


def label_examples(samples, tokenizer, max_length: int) -> list[dict[str, Any]]:
    return [{"ids": render_scored(tokenizer, c, r, max_length), "labels": labels} for c, r, labels in samples]


def collate_labels(pad_id: int):
    def collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids, mask = pad_rows([b["ids"] for b in batch], pad_id)
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": torch.tensor([b["labels"] for b in batch]),
        }

    return collate


# --------------------------------------------------------------------------------------------- losses


def bradley_terry_loss(scores: torch.Tensor, margin: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """scores [2B, 1] with chosen first: loss -log σ(r_c - r_r - margin) and pairwise accuracy."""
    chosen, rejected = scores[:, 0].chunk(2)
    diff = chosen - rejected
    return -F.logsigmoid(diff - margin).mean(), (diff > 0).float().mean()


def masked_mse(predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """MSE over labelled attributes only: -100 entries add nothing to the loss or its gradient."""
    mask = labels != MISSING_LABEL
    if not mask.any():
        raise ValueError("a batch has no labelled attribute; every sample needs at least one label")
    errors = (predictions - torch.where(mask, labels, torch.zeros_like(labels))) ** 2
    return (errors * mask).sum() / mask.sum()


class RewardModelModule(CausalLMModule):
    def __init__(self, model: ScoringModel, optim: OptimSettings, margin: float, **kwargs: Any):
        super().__init__(model, optim, **kwargs)
        self.margin = margin

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Summed over pairs (chosen and rejected rows make one pair)."""
        loss, accuracy = bradley_terry_loss(
            self.model(batch["input_ids"], batch["attention_mask"]), self.margin
        )
        pairs = torch.tensor(batch["input_ids"].shape[0] // 2, device=loss.device)
        return loss * pairs, pairs, {"accuracy": accuracy}


class AttributeModelModule(CausalLMModule):
    def loss_terms(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Summed over labelled (reply, attribute) entries."""
        labelled = (batch["labels"] != MISSING_LABEL).sum()
        mean = masked_mse(self.model(batch["input_ids"], batch["attention_mask"]), batch["labels"])
        return mean * labelled, labelled, {}


# ----------------------------------------------------------------------------------------------- stages


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


# ----------------------------------------------------------------------------------------------- scoring


@torch.no_grad()
def score_ids(model: ScoringModel, sequences: list[list[int]], pad_id: int, batch_size: int) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(sequences), batch_size):
        ids, mask = pad_rows(sequences[start : start + batch_size], pad_id)
        out.append(model(ids.to(device), mask.to(device)).float().cpu())
    return torch.cat(out) if out else torch.empty(0, model.head.out_features)


def pair_scores(
    model: ScoringModel, tokenizer, pairs: list[PreferencePair], max_length: int, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of the chosen and of the rejected reply of each pair ([N], [N])."""
    examples = pair_examples(pairs, tokenizer, max_length)
    chosen = score_ids(model, [e["chosen"] for e in examples], tokenizer.pad_token_id, batch_size)[:, 0]
    rejected = score_ids(model, [e["rejected"] for e in examples], tokenizer.pad_token_id, batch_size)[:, 0]
    return chosen, rejected


def pair_accuracy(
    model: ScoringModel, tokenizer, pairs: list[PreferencePair], max_length: int, batch_size: int
) -> dict[str, float]:
    chosen, rejected = pair_scores(model, tokenizer, pairs, max_length, batch_size)
    return {
        "accuracy": reward_accuracy(chosen.numpy(), rejected.numpy()),
        "pairs": len(chosen),
        "mean_margin": float((chosen - rejected).mean()),
        "ties": int((chosen == rejected).sum()),
    }


def attribute_table(report: Report, rows: list[dict[str, Any]]) -> None:
    report.table(
        ["attribute", "n", "MSE", "baseline MSE", "Pearson", "Spearman"],
        [[r["attribute"], r["n"], r["mse"], r["baseline_mse"], r["pearson"], r["spearman"]] for r in rows],
    )


def attribute_metrics(
    model: ScoringModel,
    tokenizer,
    meta: ScorerMeta,
    conversations: list[Conversation],
    baseline_means: list[float | None],
    batch_size: int,
) -> list[dict[str, Any]]:
    """Per attribute on held-out replies: MSE, Pearson, Spearman, next to predicting the training mean."""
    examples = label_examples(labelled_replies(conversations, meta.names), tokenizer, meta.max_length)
    predictions = score_ids(model, [e["ids"] for e in examples], tokenizer.pad_token_id, batch_size).numpy()
    labels = np.array([e["labels"] for e in examples], dtype=float).reshape(-1, len(meta.names))
    rows = []
    for j, name in enumerate(meta.names):
        keep = labels[:, j] != MISSING_LABEL
        y, p = labels[keep, j], predictions[keep, j]
        if y.size < 2:
            continue
        mean = baseline_means[j] if baseline_means[j] is not None else float(np.mean(y))
        rows.append(
            {
                "attribute": name,
                "n": int(y.size),
                "mse": float(np.mean((p - y) ** 2)),
                "baseline_mse": float(np.mean((mean - y) ** 2)),
                "pearson": float(np.corrcoef(p, y)[0, 1])
                if np.std(p) > 0 and np.std(y) > 0
                else float("nan"),
                "spearman": spearman(p, y),
            }
        )
    return rows


def eval_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    cfg = ctx.cfg
    model, tokenizer, meta = load_scorer(ctx.run_dir)
    _, val_records = split_records(load_records(cfg.data), cfg.data)
    report = Report(f"{cfg.task_name}: {meta.kind} on {cfg.model.name} / {cfg.data.name}")
    train = done.require("train")
    report.section("Setup").key_values(
        {
            "run folder": ctx.run_dir,
            "model": cfg.model.name,
            "data": cfg.data.name,
            "data half": cfg.data.half or "all",
            "optimizer steps": train.get("steps"),
            "trainable / frozen params": f"{train.get('trainable_params')} / {train.get('frozen_params')}",
            "outputs": ", ".join(meta.names),
            "pooling": meta.pooling,
        }
    )
    if meta.kind == "reward_model":
        result = pair_accuracy(model, tokenizer, val_records, meta.max_length, cfg.method.eval_batch_size)
        report.section("Held-out pairwise accuracy", "Chance is 0.5; ties count half.").key_values(result)
    else:
        rows = attribute_metrics(
            model,
            tokenizer,
            meta,
            val_records,
            train.get("train_means", [None] * len(meta.names)),
            cfg.method.eval_batch_size,
        )
        report.section(
            "Held-out attribute prediction",
            "Baseline: predict the training mean of each attribute (its correlation is undefined).",
        )
        attribute_table(report, rows)
        result = {"attributes": rows}
    report.write(ctx.run_dir / "report.md")
    return result


def train_reward_model_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    return train_reward_model(ctx)


def train_attribute_model_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    return train_attribute_model(ctx)
