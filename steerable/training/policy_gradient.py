"""On-policy policy gradient shared by the RL methods: REINFORCE with a leave-one-out baseline (RLOO).

Per step: each prompt gets a weighting w (CLP; a fixed one-hot for single-reward runs), k completions are sampled
from the policy conditioned on it, each objective is scored and normalised with frozen statistics, the scalar
reward is w·r̃ minus kl_coef times the sequence log-ratio to the adapter-disabled reference (or, with kl_in "loss",
a KL term in the loss: `kl_loss_term`), and the loss is -A·log π(y|x, w) with A the reward minus the mean of the
other k-1 samples' rewards.
The forward passes run with dropout off so the log-probs are those of the policy that sampled.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch

from steerable.budget import record_trained
from steerable.data.records import user_text
from steerable.generation import Engine, GenerationSettings
from steerable.generation.hf import RowContext, eval_mode
from steerable.generation.logprobs import (
    pack_completions,
    policy_and_reference_logprobs,
    scores_from_sampled_hidden,
)
from steerable.training.diagnostics import StepRows, policy_gradient_diagnostics
from steerable.training.lm_module import OptimSettings
from steerable.training.online import OnlineModule, PromptFeed

Rewards = Callable[[list[str], list[str]], torch.Tensor]  # (user prompts, completions) -> [N, m] normalised


class Conditioning(Protocol):
    """How a weighting reaches the policy: parameters (adapter mixing), the prompt, or not at all."""

    num_objectives: int

    def draw(self, n: int) -> torch.Tensor:
        """[n, m] weightings for n prompts."""

    def prompt(self, messages: list[dict], weights: torch.Tensor) -> list[dict]:
        """The prompt the policy sees under `weights` ([m])."""

    def rows(self, weights: torch.Tensor) -> RowContext | None:
        """Per-batch context for sampling, given each prompt's weights ([P, m])."""

    def forward(self, row_weights: torch.Tensor) -> AbstractContextManager:
        """Context for a teacher-forced forward over rows with these weights ([N, m])."""

    def signal(self) -> dict[str, float]:
        """Diagnostics of how strongly the weighting can act on the policy (e.g. how far adapter copies moved)."""


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """[P, k] rewards -> advantages: each sample's reward minus the mean reward of the other k-1 samples."""
    k = rewards.shape[1]
    if k < 2:
        raise ValueError("the leave-one-out baseline needs at least 2 samples per prompt")
    others = (rewards.sum(dim=1, keepdim=True) - rewards) / (k - 1)
    return rewards - others


def objective_scales(scores: torch.Tensor, k: int, floor: float = 1e-2) -> torch.Tensor:
    """[N, m] scores in groups of k -> [m]: each objective's pooled within-prompt standard deviation this step.

    Dividing an objective's advantages by it gives every objective the same scale inside the update, so the
    weight w_i, not how much objective i happens to vary between samples, sets its share (an objective whose
    replies differ a lot would otherwise steer every weighting). Pooled over the step's prompts rather than
    per group, so a group whose samples nearly tie is not blown up to unit scale; `floor` guards a step where
    an objective does not vary at all.
    """
    groups = scores.view(-1, k, scores.shape[1])
    return groups.var(dim=1, unbiased=True).mean(dim=0).sqrt().clamp_min(floor)


def weighted_advantages(
    scores: torch.Tensor, row_weights: torch.Tensor, log_ratio: torch.Tensor, s: PGSettings
) -> torch.Tensor:
    """[N] leave-one-out advantages of each row's w·r (objectives rescaled first with objective_scale
    "per_objective"), minus kl_coef times the log-ratio when the KL is in the reward."""
    if s.objective_scale == "per_objective":
        scores = scores / objective_scales(scores, s.samples_per_prompt)
    reward = (row_weights * scores).sum(dim=1).to(log_ratio.device)
    if s.kl_in == "reward":
        reward = reward - s.kl_coef * log_ratio
    return rloo_advantages(reward.view(-1, s.samples_per_prompt)).flatten()


def kl_loss_term(logp: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """The KL as a loss (kl_in "loss"): mean over rows of Σ_t ½(log π − log π_ref)² over reply tokens ([N, T],
    zero off the reply). Its gradient, (log π − log π_ref)·∇log π per token, has the gradient of KL(π‖π_ref)
    as its expectation under the sampling policy, and is zero where the policy equals the reference."""
    return (0.5 * (logp - ref) ** 2).sum(dim=1).mean()


@dataclass
class PGSettings:
    samples_per_prompt: int
    generation: GenerationSettings
    kl_coef: float = 0.05
    kl_in: str = "reward"  # reward: subtract kl_coef * log-ratio from the reward | loss: kl_loss_term
    # none: the advantage of w·r (the paper) | per_objective: each objective's advantage divided by its
    # within-prompt spread this step before weighting (objective_scales)
    objective_scale: str = "none"
    engine: Engine = field(
        default_factory=Engine
    )  # the sampler recipe (configured engine, end-of-turn token)


class PolicyGradientModule(OnlineModule):
    """One step = one batch of prompts: sample, reward, RLOO loss (Lightning does backward, clipping, step)."""

    global_mean_loss = False  # a mean over this rank's equally sized batch; DDP's average makes it global

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        optim: OptimSettings,
        settings: PGSettings,
        rewards: Rewards,
        conditioning: Conditioning,
        feed: PromptFeed | None = None,
    ) -> None:
        feed = feed or PromptFeed()
        super().__init__(model, optim, sampler=feed.sampler, batch_size=feed.per_round)
        self.tokenizer = tokenizer
        self.settings = settings
        self.rewards = rewards
        self.conditioning = conditioning
        self.history: list[dict[str, float]] = []  # this rank's metrics per step, for the diagnostics report

    def training_step(self, prompts: list[list[dict]], batch_idx: int) -> torch.Tensor:
        loss, metrics = self.rl_loss(prompts)
        self.history.append(metrics)
        self.log_dict(metrics, batch_size=len(prompts), sync_dist=True)
        return loss

    def rl_loss(self, prompts: list[list[dict]]) -> tuple[torch.Tensor, dict[str, Any]]:
        s, c = self.settings, self.conditioning
        k = s.samples_per_prompt
        weights = c.draw(len(prompts))
        repeats = len(weights) // len(prompts)  # weightings per prompt: 2 when mirrored
        prompts = [p for p in prompts for _ in range(repeats)]
        shown = [c.prompt(p, w) for p, w in zip(prompts, weights, strict=True)]
        engine = s.engine.sampler(self.model, self.tokenizer)
        generation = replace(s.generation, keep_hidden=scores_from_sampled_hidden(self.model))
        completions = engine.generate(shown, generation, row_context=c.rows(weights))
        row_weights = weights.repeat_interleave(k, dim=0)
        users = [user_text(prompts[x.prompt_index]) for x in completions]
        scores = self.rewards(users, [x.text for x in completions])  # [N, m] normalised
        scalar = (row_weights * scores).sum(dim=1)
        ids, mask, response = (t.to(self.device) for t in pack_completions(completions, self._pad_id()))
        record_trained(mask.sum())
        with eval_mode(self.model):  # dropout off: the log-probs of the policy that sampled
            logp, ref = policy_and_reference_logprobs(
                self.model,
                ids,
                mask,
                response,
                policy=lambda: c.forward(row_weights),
                hidden=[x.hidden for x in completions],
            )
        log_ratio = (logp - ref).sum(dim=1)  # sampled-token estimate of KL(policy || reference)
        advantages = weighted_advantages(scores, row_weights, log_ratio.detach(), s)
        loss = -(advantages.detach() * logp.sum(dim=1)).mean()
        if s.kl_in == "loss":
            loss = loss + s.kl_coef * kl_loss_term(logp, ref)
        metrics = {
            "train/reward": float(scalar.mean()),
            "train/kl": float(log_ratio.detach().mean()),
            "train/completion_tokens": float(response.sum()) / len(completions),
            **{
                f"train/reward_{name}": float(scores[:, i].mean())
                for i, name in enumerate(self._names(scores))
            },
            "diag/truncated_fraction": sum(x.finish_reason == "length" for x in completions)
            / len(completions),
            **policy_gradient_diagnostics(
                self._names(scores),
                StepRows(row_weights, scores, scalar, log_ratio, advantages),
                k,
                s.kl_coef,
            ),
            **c.signal(),
        }
        return loss, metrics

    def _names(self, scores: torch.Tensor) -> list[str]:
        names = getattr(self.rewards, "names", None)
        return list(names) if names else [str(i) for i in range(scores.shape[1])]

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        raise NotImplementedError("RL runs have no teacher-forced validation; the eval stage measures them")


class NoConditioning:
    """A single fixed weighting (Rewarded Soups' single-reward runs, plain RL on one reward)."""

    def __init__(self, weights: torch.Tensor) -> None:
        self.fixed = torch.as_tensor(weights, dtype=torch.float32)
        self.num_objectives = len(self.fixed)

    def draw(self, n: int) -> torch.Tensor:
        return self.fixed.expand(n, -1).clone()

    def prompt(self, messages: list[dict], weights: torch.Tensor) -> list[dict]:
        return messages

    def rows(self, weights: torch.Tensor) -> RowContext | None:
        return None

    def forward(self, row_weights: torch.Tensor) -> AbstractContextManager:
        return nullcontext()

    def signal(self) -> dict[str, float]:
        return {}
