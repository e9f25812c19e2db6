"""SuperHF's superbatch loop as a LightningModule, one function each for its steps: sample n completions per
prompt, trim, score, keep the top k per prompt and train on them with the loss (`loss.py`) and its KL prior.
The reference is the same network with the LoRA adapter switched off."""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from steerable.budget import record_trained
from steerable.data.records import user_text
from steerable.data.tokenize import IGNORE_INDEX, PaddingCollator, TokenizedExample, tokenize_conversation
from steerable.evaluation.meteor import mean_pairwise_meteor
from steerable.generation import Engine, GenerationSettings, Sampler
from steerable.methods.superhf.loss import KLSettings, superhf_loss
from steerable.training.lm_module import OptimSettings
from steerable.training.online import OnlineModule, PromptFeed

log = logging.getLogger(__name__)

# The paper's trim: cut at the first "\n\n<Speaker>:" or a bare "Human"/"Assistant" (B2, B9.4).
TRIM_PATTERN = re.compile(r"\n\n[^:]+:|Human|Assistant")


def trim_completion(text: str) -> str:
    """The completion up to where the model starts writing the next speaker's turn, stripped."""
    return TRIM_PATTERN.split(text, maxsplit=1)[0].strip()


def top_k_per_prompt(scores: Sequence[float], texts: Sequence[str], group: int, k: int) -> list[int]:
    """Indices of the best `k` non-empty completions in each consecutive group of `group` (one prompt)."""
    kept = []
    for start in range(0, len(texts), group):
        members = [i for i in range(start, start + group) if texts[i]]
        members.sort(key=lambda i: -scores[i])
        kept += members[:k]
    return kept


def length_penalised(scores: Sequence[float], texts: Sequence[str], penalty: float) -> list[float]:
    """score - penalty * log(words), the code's length penalty (off at 0)."""
    if penalty == 0:
        return list(scores)
    return [s - penalty * math.log(len(t.split())) if t else s for s, t in zip(scores, texts, strict=True)]


def training_example(
    tokenizer, prompt: list[dict], completion: str, eot_id: int, ended: bool
) -> TokenizedExample:
    """prompt + kept completion with loss on the completion only; the end-of-turn token is learned only when
    the sample really ended (a completion cut at max_new_tokens must not teach the model to stop there)."""
    example = tokenize_conversation(
        tokenizer, [*prompt, {"role": "assistant", "content": completion}], eot_id
    )
    if not ended:
        labels = list(example.labels)
        last = max(i for i, t in enumerate(labels) if t != IGNORE_INDEX)
        if labels[last] == eot_id:
            labels[last] = IGNORE_INDEX
        example = TokenizedExample(example.input_ids, labels)
    return example


# ------------------------------------------------------------------------------------------------ loop


@dataclass
class SuperHFSettings:
    completions_per_prompt: int
    top_k: int
    minibatch_size: int
    generation: GenerationSettings
    kl: KLSettings
    trim: bool = True
    length_penalty: float = 0.0
    inverse_loss_penalty: float = 0.0
    gradient_clip: float | None = 1.0
    eval_every: int = 8


Scorer = Callable[[list[str], list[str]], list[float]]  # (user prompts, completions) -> one score each


@dataclass
class Sampled:
    """One superbatch's samples: texts after trimming, whether each ended on its own, and their scores."""

    prompts: list[list[dict]]  # per completion
    texts: list[str]
    ended: list[bool]
    scores: list[float]
    tokens: list[int]


def sample_and_score(
    sampler: Sampler, prompts: list[list[dict]], settings: SuperHFSettings, score: Scorer
) -> Sampled:
    completions = sampler.generate(prompts, settings.generation)
    per_completion = [prompts[c.prompt_index] for c in completions]
    texts, ended = [], []
    for c in completions:
        text = trim_completion(c.text) if settings.trim else c.text.strip()
        texts.append(text)
        ended.append(c.finish_reason != "length" or text != c.text.strip())
    scores = score([user_text(p) for p in per_completion], texts)
    scores = length_penalised(scores, texts, settings.length_penalty)
    return Sampled(per_completion, texts, ended, scores, [len(c.token_ids) for c in completions])


@dataclass
class Rollout:
    """How a round samples and scores: the engine and the policy's tokenizer, the training reward, the
    end-of-turn id that closes a kept completion, and the autocast context that sampling and the fixed-prompt
    evaluation run under."""

    engine: Engine
    tokenizer: Any
    score: Scorer
    eot_id: int
    autocast: Callable[[], AbstractContextManager] = nullcontext


class SuperHFModule(OnlineModule):
    """One training step = one superbatch: sample, score, keep top-k per prompt, then one optimizer step per
    minibatch of kept completions; the scheduler steps once per superbatch (it counts superbatches)."""

    one_pass = True  # one epoch over the prompts, as the paper's loop

    def __init__(
        self,
        model: torch.nn.Module,
        optim: OptimSettings,
        settings: SuperHFSettings,
        rollout: Rollout,
        evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
        feed: PromptFeed | None = None,
        reference: torch.nn.Module | None = None,
    ) -> None:
        feed = feed or PromptFeed()
        super().__init__(model, optim, sampler=feed.sampler, batch_size=feed.per_round)
        self.automatic_optimization = False
        self.tokenizer, self.settings, self.rollout, self.evaluate_fn = (
            rollout.tokenizer,
            settings,
            rollout,
            evaluate,
        )
        self.collate = PaddingCollator(self.tokenizer.pad_token_id)
        if reference is not None:
            self.hold_frozen("reference", reference)
        else:
            self.reference = None  # the KL's reference is the policy with its adapter off
        self.skipped_losses = 0

    def training_step(self, prompts: list[list[dict]], batch_idx: int) -> None:
        s = self.settings
        if self.evaluate_fn is not None and batch_idx % s.eval_every == 0 and self.trainer.is_global_zero:
            self._log_eval()
        started = time.perf_counter()
        with self.rollout.autocast():
            sampled = sample_and_score(
                self.rollout.engine.sampler(self.model, self.tokenizer),
                prompts,
                s,
                self.rollout.score,
            )
        generated = time.perf_counter()
        kept = top_k_per_prompt(sampled.scores, sampled.texts, s.completions_per_prompt, s.top_k)
        stats = self._train_on(sampled, kept)
        trained = time.perf_counter()
        self.lr_schedulers().step()
        kept_texts = [sampled.texts[i] for i in kept]
        metrics = {
            "train/reward_all": sum(sampled.scores) / len(sampled.scores),
            "train/reward_kept": sum(sampled.scores[i] for i in kept) / max(len(kept), 1),
            "train/completion_tokens": sum(sampled.tokens) / len(sampled.tokens),
            "train/empty_fraction": sum(not t for t in sampled.texts) / len(sampled.texts),
            "train/kept": float(len(kept)),
            "train/generate_seconds": generated - started,
            "train/train_seconds": trained - generated,
            "train/skipped_losses": float(self.skipped_losses),
            **{f"train/{k}": v for k, v in stats.items()},
        }
        if len(kept_texts) >= 2:
            metrics["train/meteor_similarity"] = mean_pairwise_meteor(
                kept_texts, max_pairs=64, seed=batch_idx
            )
        self.last_local_metrics = metrics  # this rank's own values (tests compare them with the reduced ones)
        self.log_dict(metrics, batch_size=1, sync_dist=True)

    def _train_on(self, sampled: Sampled, kept: list[int]) -> dict[str, float]:
        s = self.settings
        optimizer = self.optimizers()
        examples = [
            training_example(
                self.tokenizer, sampled.prompts[i], sampled.texts[i], self.rollout.eot_id, sampled.ended[i]
            )
            for i in kept
        ]
        totals: dict[str, float] = {}
        steps = 0
        for start in range(0, len(examples), s.minibatch_size):
            batch = {
                k: v.to(self.device)
                for k, v in self.collate(examples[start : start + s.minibatch_size]).items()
            }
            loss, stats = superhf_loss(
                self.model,
                batch,
                s.kl,
                self.reference,
                ce_scale=self._token_share(batch["labels"]),
            )
            if s.inverse_loss_penalty > 0:
                loss = loss + s.inverse_loss_penalty / loss
            if self._any_rank(not torch.isfinite(loss) or loss.item() < 0):
                self.skipped_losses += 1
                log.warning("skipped an invalid loss (%s); %d so far", loss.item(), self.skipped_losses)
                continue
            optimizer.zero_grad()
            self.manual_backward(loss)
            record_trained(batch["attention_mask"].sum())
            if s.gradient_clip:
                self.clip_gradients(
                    optimizer, gradient_clip_val=s.gradient_clip, gradient_clip_algorithm="norm"
                )
            optimizer.step()
            steps += 1
            for key, value in {"loss": float(loss.detach()), **stats}.items():
                totals[key] = totals.get(key, 0.0) + value
        return {k: v / steps for k, v in totals.items()} if steps else {}

    def _token_share(self, labels: torch.Tensor) -> float:
        """world_size x this rank's target tokens / all ranks' target tokens (1.0 in one process): with it,
        DDP's gradient average equals the gradient of the token mean over the global minibatch."""
        world = self.trainer.world_size
        if world == 1:
            return 1.0
        local = (labels[:, 1:] != IGNORE_INDEX).sum().float()
        total = self.trainer.strategy.reduce(local.clone(), reduce_op="sum")
        return float(local * world / total.clamp_min(1))

    def _any_rank(self, flag: bool) -> bool:
        """Ranks must agree on skipping a minibatch: one rank stepping alone would hang the other."""
        if self.trainer.world_size == 1:
            return flag
        votes = self.trainer.strategy.reduce(torch.tensor(float(flag), device=self.device), reduce_op="sum")
        return bool(votes > 0)

    def _log_eval(self) -> None:
        with self.rollout.autocast():
            values = self.evaluate_fn(self.model)
        self.log_dict({f"eval/{k}": v for k, v in values.items()}, batch_size=1, rank_zero_only=True)

    def on_train_end(self) -> None:
        if self.evaluate_fn is not None and self.logger is not None and self.trainer.is_global_zero:
            with self.rollout.autocast():
                values = self.evaluate_fn(self.model)
            self.logger.log_metrics({f"eval/{k}": v for k, v in values.items()}, step=self.global_step)
