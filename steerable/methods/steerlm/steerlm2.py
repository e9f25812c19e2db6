"""SteerLM 2.0 (HelpSteer2 paper §4.5; spec A8): fit Q_θ(y|a,x) to P(y|a,x) ∝ P(a|x,y)·P(y|x) by minimising
KL(P || Q_θ) with importance-weighted samples from the current conditioned policy Q'.

Per (prompt x, requested attributes a) a group of n replies y_i ~ Q'(·|a,x) gets
    w'_i = softmax_i( log P(a|x,y_i) + log P(y_i|x) − log Q'(y_i|a,x) )     target weights (fixed)
    b'_i = softmax_i( log Q_θ(y_i|a,x) − log Q'(y_i|a,x) )                    baseline (current θ, no gradient)
    loss = Σ_i (w'_i − b'_i) · NLL_θ(y_i) / mean reply length of the group,  so ∇ ≈ −Σ (w' − b') ∇log Q_θ
P(y|x) is the unlabelled SFT baseline, P(a|x,y) the attribute model read as a Beta distribution over each
attribute's value bins, and Q' both samples and initialises Q_θ. `iterations` resamples from the updated policy.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import beta as beta_distribution

from steerable.backbone import load_backbone
from steerable.backbone.adapters import save_model
from steerable.data.tokenize import tokenize_prompt
from steerable.generation.base import Completion
from steerable.generation.hf import eval_mode
from steerable.generation.logprobs import pack_completions, sequence_logprobs
from steerable.methods.base import FINAL_MODEL_DIR, RunContext, sub_context
from steerable.methods.fitting import build_loaders, fit_module, optim_settings
from steerable.methods.steerlm.attributes import AttributeSchema, parse_assignments
from steerable.methods.steerlm.config import SteerLM2Config
from steerable.methods.steerlm.stages import (
    SCHEMA_KEY,
    Annotator,
    high_quality_combinations,
    labelled_split,
    load_schema,
    policy_dir,
    publish_policy,
    sample_requests,
)
from steerable.pipeline import StageResults, StageSummary
from steerable.run_dir import write_text_atomic
from steerable.training.lm_module import CausalLMModule

# ------------------------------------------------------------------------------------------- the maths


def label_logprob(
    predictions: np.ndarray, labels: np.ndarray, value_range: tuple[int, int], concentration: float = 24.0
) -> np.ndarray:
    """log P(a|x,y) summed over attributes: each prediction r (on the label scale) becomes Beta(c·r', c − c·r')
    with r' = r scaled to [0, 1]; label value n owns the bin [n/K, (n+1)/K) of K equal bins (spec A8)."""
    low, high = value_range
    bins = high - low + 1
    scaled = np.clip((np.asarray(predictions, dtype=float) - low) / (high - low), 1e-4, 1 - 1e-4)
    a = concentration * scaled
    b = concentration - a
    index = np.asarray(labels) - low
    mass = beta_distribution.cdf((index + 1) / bins, a, b) - beta_distribution.cdf(index / bins, a, b)
    return np.log(np.clip(mass, 1e-12, None)).sum(axis=-1)


def target_weights(
    log_attributes: torch.Tensor, log_prior: torch.Tensor, log_sampler: torch.Tensor
) -> torch.Tensor:
    """w' per group ([G, n] inputs): self-normalised importance weights of P(y|a,x) against the sampler Q'."""
    return torch.softmax(log_attributes + log_prior - log_sampler, dim=-1)


def steerlm2_loss(
    sequence_logp: torch.Tensor, reply_tokens: torch.Tensor, log_sampler: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, distance) for [G, n] groups: sequence_logp = log Q_θ(y_i|a,x) with gradient."""
    baseline = torch.softmax(sequence_logp.detach() - log_sampler, dim=-1)
    scale = reply_tokens.float().mean(dim=-1).clamp_min(1.0)
    loss = (((weights - baseline) * -sequence_logp).sum(dim=-1) / scale).mean()
    distance = (torch.xlogy(weights, weights) - weights * baseline.clamp_min(1e-30).log()).sum(dim=-1).mean()
    return loss, distance


class SteerLM2Module(CausalLMModule):
    """A batch is a list of groups: every reply to one (prompt, attributes) sits in the same batch."""

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Summed over groups (the spec's loss is a mean over (prompt, attributes) groups)."""
        groups, n = batch["weights"].shape
        logp = sequence_logprobs(
            self.model, batch["input_ids"], batch["attention_mask"], batch["response_mask"]
        )
        sequence = logp.sum(dim=1).view(groups, n)
        tokens = batch["response_mask"].sum(dim=1).view(groups, n)
        loss, distance = steerlm2_loss(sequence, tokens, batch["log_sampler"], batch["weights"])
        count = torch.tensor(groups, device=loss.device)
        return loss * count, count, {"distance": distance.detach()}


def collate_groups(pad_id: int):
    def collate(groups: list[dict]) -> dict[str, torch.Tensor]:
        completions = [c for g in groups for c in g["completions"]]
        ids, mask, response = pack_completions(completions, pad_id)
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "response_mask": response,
            "weights": torch.stack([g["weights"] for g in groups]),
            "log_sampler": torch.stack([g["log_sampler"] for g in groups]),
        }

    return collate


# ------------------------------------------------------------------------------------------- the stage


def summed_logprobs(
    model, completions: list[Completion], pad_id: int, batch_size: int, autocast
) -> torch.Tensor:
    """Σ_t log p(y_t | prompt, y_<t) per completion, teacher-forced on each completion's prompt_token_ids."""
    out = []
    with eval_mode(model), torch.no_grad(), autocast():
        for start in range(0, len(completions), batch_size):
            chunk = completions[start : start + batch_size]
            ids, mask, response = (t.to(model.device) for t in pack_completions(chunk, pad_id))
            out.append(sequence_logprobs(model, ids, mask, response).sum(dim=1).float().cpu())
    return torch.cat(out)


def group_record(
    prompt: list[dict],
    requested: dict,
    group: dict,
    log_attributes: torch.Tensor,
    log_prior: torch.Tensor,
    first: int,
) -> dict:
    """One prompt's replies with the three log-probs and the target weight, as written to the run folder
    (`first` is the index of the group's first reply in the flat tensors)."""
    return {
        "prompt_turns": prompt,
        "label": requested,
        "responses": [
            {
                "value": c.text,
                "log(P(a|x,y))": float(log_attributes[first + i]),
                "log(P(y|x))": float(log_prior[first + i]),
                "log(Q(y|a,x))": float(group["log_sampler"][i]),
                "weight": float(group["weights"][i]),
            }
            for i, c in enumerate(group["completions"])
        ],
    }


def sample_groups(
    ctx: RunContext,
    policy,
    prior,
    tokenizer,
    annotator,
    schema: AttributeSchema,
    combos: list[dict],
    train,
    iteration: int,
    pad_id: int,
) -> tuple[list[dict], list[dict]]:
    """n replies per (prompt, requested attributes) from the current policy, with their three log-probs."""
    cfg, s = ctx.cfg, ctx.cfg.method.steerlm2
    prompts, requested, completions = sample_requests(
        ctx, policy, tokenizer, schema, train, combos, s, cfg.seed + iteration
    )
    log_sampler = torch.stack([c.logprobs.sum() for c in completions]).float()
    plain_ids = [tokenize_prompt(tokenizer, p) for p in prompts]  # P(y|x) reads the prompt without a label
    plain = [replace(c, prompt_token_ids=plain_ids[c.prompt_index]) for c in completions]
    log_prior = summed_logprobs(prior, plain, pad_id, cfg.method.eval_batch_size, ctx.autocast)
    raw = annotator.raw([prompts[c.prompt_index] for c in completions], [c.text for c in completions])
    labels = np.array([[requested[c.prompt_index][k] for k in schema.names] for c in completions])
    log_attributes = torch.tensor(
        label_logprob(raw[:, annotator.columns], labels, schema.value_range, s.concentration),
        dtype=torch.float32,
    )
    n = s.samples_per_prompt
    view = (len(prompts), n)
    weights = target_weights(log_attributes.view(view), log_prior.view(view), log_sampler.view(view))
    groups = [
        {
            "completions": completions[g * n : (g + 1) * n],
            "weights": weights[g],
            "log_sampler": log_sampler.view(view)[g],
        }
        for g in range(len(prompts))
    ]
    records = [
        group_record(prompts[g], requested[g], groups[g], log_attributes, log_prior, g * n)
        for g in range(len(prompts))
    ]
    return groups, records


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
    prior, _ = load_backbone(cfg.model, adapter_dir=Path(done.require("baseline")["path"]))
    policy.to(ctx.device)
    prior.to(ctx.device)
    annotator = Annotator.for_run(ctx, done.require("apm")["path"], list(schema.names))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    recipe = replace(method, lr=s.lr, scheduler="constant", warmup_steps=0, batch_size=s.groups_per_step)
    rounds, state_dict = [], None
    for iteration in range(1, s.iterations + 1):
        folder = f"steerlm2/iter{iteration}"
        groups, records = sample_groups(
            ctx, policy, prior, tokenizer, annotator, schema, combos, train, iteration, pad
        )
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
