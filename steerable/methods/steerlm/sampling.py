"""Sampling the conditioned policy for requested attributes, shared by the bootstrap and SteerLM 2.0 stages:
requests drawn from the high-quality label combinations of the training data, replies sampled for them, relabelled
by the annotator, and (SteerLM 2.0) grouped with the log-probs its loss needs."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from steerable.config.schema import ConfigError
from steerable.data.records import Conversation, Turn, prompt_of
from steerable.data.tokenize import tokenize_prompt
from steerable.generation import Engine, settings_from
from steerable.generation.base import Completion
from steerable.generation.hf import eval_mode
from steerable.generation.logprobs import pack_completions, sequence_logprobs
from steerable.methods.base import RunContext
from steerable.methods.steerlm.attributes import AttributeSchema, steered_prompt
from steerable.methods.steerlm.loss import label_logprob, target_weights
from steerable.run_dir import write_text_atomic


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


@dataclass
class RequestPool:
    """Where sampling requests come from: the attribute schema, the training conversations whose prompts are
    drawn, and the high-quality attribute combinations a request asks for."""

    schema: AttributeSchema
    train: list
    combos: list[dict]


def pad_id(tokenizer) -> int:
    """The id that pads packed completions: the tokenizer's pad token, else its end of sequence."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def sample_requests(
    ctx: RunContext, model, tokenizer, pool: RequestPool, section, seed: int
) -> tuple[list[list[dict]], list[dict], list]:
    """Draw `section.num_prompts` training prompts with attribute values to ask for (from `pool.combos`), then
    sample `section.samples_per_prompt` replies each with the trained label prefix, stopping before a new
    label. `section` is the stage's config, whose `sampling` says how (bootstrap: top-k; SteerLM 2.0: top-p)."""
    schema = pool.schema
    prompts, requested = draw_requests(pool.train, pool.combos, section.num_prompts, random.Random(seed))
    texts = [steered_prompt(tokenizer, p, schema, v) for p, v in zip(prompts, requested, strict=True)]
    n = section.samples_per_prompt
    gen = settings_from(
        section.sampling,
        num_return_sequences=n,
        batch_size=max(1, ctx.cfg.method.eval.batch_size // n),
        stop=[*section.sampling.stop, schema.label_start],
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
    ctx: RunContext, policy, prior, tokenizer, annotator, pool: RequestPool, iteration: int
) -> tuple[list[dict], list[dict]]:
    """n replies per (prompt, requested attributes) from the current policy, with their three log-probs."""
    cfg, s, schema = ctx.cfg, ctx.cfg.method.steerlm2, pool.schema
    prompts, requested, completions = sample_requests(ctx, policy, tokenizer, pool, s, cfg.seed + iteration)
    log_sampler = torch.stack([c.logprobs.sum() for c in completions]).float()
    plain_ids = [tokenize_prompt(tokenizer, p) for p in prompts]  # P(y|x) reads the prompt without a label
    plain = [replace(c, prompt_token_ids=plain_ids[c.prompt_index]) for c in completions]
    log_prior = summed_logprobs(prior, plain, pad_id(tokenizer), cfg.method.eval_batch_size, ctx.autocast)
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
