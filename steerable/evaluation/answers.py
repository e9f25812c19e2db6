"""Answering a suite's request grid with one policy, whatever method made it: every request becomes the
policy's own controls (`controls_for`), every reply is scored by the suite's objectives, and the replies to
the default request are scored against the base model too (KL). Method-neutral."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from peft import PeftModel

from steerable.backbone.adapters import reference_policy
from steerable.generation import Completion, GenerationSettings
from steerable.generation.hf import encode_prompt, eval_mode
from steerable.generation.logprobs import pack_completions, sequence_logprobs
from steerable.policies.base import Request, SteerablePolicy
from steerable.rewards.base import RewardStack


@dataclass
class Cell:
    """One request (or a fixed policy's one point) answered on every prompt. `weights`: what was asked
    (None: a fixed policy trained for no weighting, so it has no dial position); `scores` [P, K]."""

    weights: dict[str, float] | None
    scores: np.ndarray
    texts: list[str]
    log_ratio: np.ndarray | None = None  # [P] log p_policy(y|x) - log p_base(y|x), at the default request
    default: bool = False


@dataclass
class Answers:
    """Everything one policy produced on the grid, and how fast it decoded."""

    cells: list[Cell]
    decode_tokens: int = 0
    decode_seconds: float = 0.0


def answer_grid(
    policy: SteerablePolicy,
    grid: list[Request],
    default: Request,
    prompts: list[list[dict]],
    stack: RewardStack,
    settings: GenerationSettings,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> Answers:
    """Steerable policies answer every request of the grid; fixed ones (no controls for a request) answer
    once, at their `fixed_weights` when they were trained for a weighting."""
    out = Answers([])
    steerable = bool(policy.controls_for(default))
    asked = grid if steerable else [None]
    replies: dict[str, list[Completion]] = {}  # requests that map to the same controls share replies
    for request in asked:
        controls = policy.controls_for(request) if request is not None else {}
        key = json.dumps(controls, sort_keys=True, default=str)
        if key not in replies:
            started = time.perf_counter()
            with autocast():
                replies[key] = policy.generate(prompts, controls, settings)
            out.decode_seconds += time.perf_counter() - started
            out.decode_tokens += sum(len(c.token_ids) for c in replies[key])
        weights = request.weights if request is not None else policy.fixed_weights
        is_default = request is None or request.weights == default.weights
        out.cells.append(_cell(replies[key], weights, prompts, stack, is_default))
    for cell, key in zip(out.cells, _keys(policy, asked), strict=True):
        if cell.default:
            with autocast():  # the base scores at the precision the policy sampled at
                cell.log_ratio = log_ratio_to_base(policy, prompts, replies[key])
    return out


def _keys(policy: SteerablePolicy, asked: list[Request | None]) -> list[str]:
    return [
        json.dumps(policy.controls_for(r) if r is not None else {}, sort_keys=True, default=str)
        for r in asked
    ]


def _cell(completions, weights, prompts, stack: RewardStack, default: bool) -> Cell:
    texts = [c.text for c in completions]
    users = [p[-1]["content"] for p in prompts]
    scores = stack.score(users, texts).float().numpy()
    return Cell(dict(weights) if weights is not None else None, scores, texts, default=default)


def log_ratio_to_base(
    policy: SteerablePolicy, prompts: list[list[dict]], completions: list[Completion]
) -> np.ndarray:
    """Per reply, Σ log p_policy(y|x, controls) - Σ log p_base(y|x) over its tokens (the sampled-token
    estimate of KL(policy || base) when replies are sampled): the policy's own log-probs came with the
    sample; the base model reads the plain prompt (no instruction, label or weighting) and the same reply."""
    plain = [encode_prompt(policy.tokenizer, p) for p in prompts]
    rows = [replace(c, prompt_token_ids=plain[c.prompt_index]) for c in completions]
    pad = policy.tokenizer.pad_token_id if policy.tokenizer.pad_token_id is not None else 0
    ids, mask, response = pack_completions(rows, pad)
    with base_network(policy) as model, eval_mode(model), torch.no_grad():
        device = next(model.parameters()).device
        base = sequence_logprobs(model, ids.to(device), mask.to(device), response.to(device)).sum(1)
    own = torch.stack([c.logprobs.float().sum() for c in completions])
    return (own - base.float().cpu()).numpy()


class base_network(AbstractContextManager):
    """The model the policy was trained from: its LoRA adapters switched off, else the base loaded again."""

    def __init__(self, policy: SteerablePolicy) -> None:
        self.policy = policy
        self._inner: Any = None

    def __enter__(self) -> torch.nn.Module:
        model = self.policy.model
        if isinstance(model, PeftModel):
            self._inner = reference_policy(model)
            self._inner.__enter__()
            return model
        from steerable.policies.plain import starting_policy

        device = next(model.parameters()).device
        return starting_policy(self.policy).model.to(device)

    def __exit__(self, *exc: Any) -> None:
        if self._inner is not None:
            self._inner.__exit__(*exc)
