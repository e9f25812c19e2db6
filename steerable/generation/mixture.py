"""Decoding from a token-level mixture of LoRA experts that share one base model.

Each prompt row is replicated once per expert and every replica runs with its expert's adapter (one-hot weights in
an `AdapterMixer`, its stacked form where the adapters allow it), so one batched forward per step with one KV cache
serves all experts; the next token is drawn from the mixture and appended to every replica. Mixing modes:
  probability  p(y_t) = Σ_i α_i p_i(y_t)                         (PCM's token-level merging)
  logit        p(y_t) ∝ Π_i p_i(y_t)^α_i, i.e. Σ_i α_i log p_i    (zero-shot logit mixing, DeRa/MOD-style)
The weights are fixed per prompt or come from a function of the tokens generated so far (PCM's controller).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from steerable.backbone.mixing import AdapterMixer
from steerable.budget import record_generated
from steerable.data.tokenize import pad_rows
from steerable.generation.base import Completion, GenerationSettings, Prompt, fit_to_context
from steerable.generation.hf import CACHE_KWARG, encode_prompt, end_token_ids, eval_mode, seeded
from steerable.generation.logprobs import position_ids_from_mask

# (prompt indices of the batch, tokens generated so far [B, t]) -> mixture weights [B, n]
WeightFn = Callable[[list[int], torch.Tensor], torch.Tensor]

MODES = ("probability", "logit")


def mix_log_probs(expert_log_probs: torch.Tensor, weights: torch.Tensor, mode: str) -> torch.Tensor:
    """[B, n, V] expert log-probs and [B, n] weights -> [B, V] log-probs of the mixture (a valid distribution)."""
    weights = weights.to(expert_log_probs)
    if mode == "probability":
        return torch.logsumexp(expert_log_probs + torch.log(weights.clamp_min(1e-30))[:, :, None], dim=1)
    if mode == "logit":
        return torch.log_softmax((weights[:, :, None] * expert_log_probs).sum(dim=1), dim=-1)
    raise ValueError(f"mixing mode must be one of {MODES}, got {mode!r}")


def _filter_top_p(log_probs: torch.Tensor, top_p: float) -> torch.Tensor:
    if top_p >= 1.0:
        return log_probs
    sorted_lp, order = log_probs.sort(dim=-1, descending=True)
    cumulative = sorted_lp.exp().cumsum(dim=-1)
    drop = cumulative - sorted_lp.exp() > top_p  # keep the smallest set whose mass reaches top_p
    sorted_lp = sorted_lp.masked_fill(drop, float("-inf"))
    return torch.full_like(log_probs, float("-inf")).scatter(-1, order, sorted_lp)


class MixtureSampler:
    """Sampler over a mixture of the named adapters `experts` of one PEFT model."""

    def __init__(
        self,
        mixer: AdapterMixer,
        tokenizer,
        end_of_turn: str | None = None,
        mode: str = "probability",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mixing mode must be one of {MODES}, got {mode!r}")
        self.mixer, self.model, self.tokenizer, self.mode = mixer, mixer.model, tokenizer, mode
        self.num_experts = len(mixer.names)
        self.stacked = mixer.supports_stacking()  # one low-rank product per layer for all experts
        self.end_ids = end_token_ids(self.model, tokenizer, end_of_turn)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.end_ids[0]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(
        self,
        prompts: Sequence[Prompt],
        settings: GenerationSettings,
        weights: torch.Tensor | WeightFn,
    ) -> list[Completion]:
        """One completion per prompt (`settings.num_return_sequences` is not used here)."""
        encoded = fit_to_context(
            [encode_prompt(self.tokenizer, p) for p in prompts], settings.max_new_tokens, self.model
        )
        out: list[Completion] = []
        with eval_mode(self.model), torch.no_grad(), seeded(settings.seed, self.device):
            for start in range(0, len(encoded), settings.batch_size):
                indices = list(range(start, min(start + settings.batch_size, len(encoded))))
                out += self._batch(encoded, indices, settings, weights)
        record_generated(out)
        return out

    def _weights(self, weights, indices: list[int], generated: torch.Tensor) -> torch.Tensor:
        if callable(weights):
            return weights(indices, generated)
        return torch.as_tensor(weights, dtype=torch.float32)[indices]

    def _batch(self, encoded, indices: list[int], settings: GenerationSettings, weights) -> list[Completion]:
        n, b = self.num_experts, len(indices)
        ids, mask = pad_rows([encoded[i] for i in indices], self.pad_id, side="left")
        ids, mask = ids.repeat_interleave(n, 0).to(self.device), mask.repeat_interleave(n, 0).to(self.device)
        one_hot = torch.eye(n).repeat(b, 1)  # replica r of a prompt runs expert r
        generated = torch.zeros(b, 0, dtype=torch.long, device=self.device)
        token_log_probs = torch.zeros(b, 0)
        expert_token_log_probs = torch.zeros(b, 0, n)
        finished = torch.zeros(b, dtype=torch.bool, device=self.device)
        cache, step_ids, positions = None, ids, position_ids_from_mask(mask)
        mixing = self.mixer.stacked if self.stacked else self.mixer.weighted
        with mixing(one_hot):  # the replicas' adapters stay fixed for the whole batch
            for _ in range(settings.max_new_tokens):
                output = self.model(
                    input_ids=step_ids,
                    attention_mask=mask,
                    position_ids=positions,
                    use_cache=True,
                    **{CACHE_KWARG: cache},
                )
                cache = output[CACHE_KWARG]
                expert_lp = output.logits[:, -1].float().log_softmax(-1).view(b, n, -1)
                alpha = self._weights(weights, indices, generated).to(self.device)
                mixed = mix_log_probs(expert_lp, alpha, self.mode)
                token = self._pick(mixed, settings)
                token = torch.where(finished, torch.full_like(token, self.pad_id), token)
                token_log_probs = torch.cat([token_log_probs, mixed.gather(1, token[:, None]).cpu()], dim=1)
                picked = expert_lp.gather(2, token[:, None, None].expand(b, n, 1)).squeeze(2).cpu()
                expert_token_log_probs = torch.cat([expert_token_log_probs, picked[:, None]], dim=1)
                generated = torch.cat([generated, token[:, None]], dim=1)
                finished |= torch.isin(token, torch.tensor(self.end_ids, device=self.device))
                if bool(finished.all()):
                    break
                step_ids = token.repeat_interleave(n)[:, None]
                mask = torch.cat([mask, torch.ones(b * n, 1, dtype=mask.dtype, device=self.device)], dim=1)
                positions = positions[:, -1:] + 1
        return [
            self._completion(
                indices[row], generated[row], token_log_probs[row], expert_token_log_probs[row], encoded
            )
            for row in range(b)
        ]

    def _pick(self, log_probs: torch.Tensor, settings: GenerationSettings) -> torch.Tensor:
        if not settings.do_sample:
            return log_probs.argmax(-1)
        scaled = torch.log_softmax(log_probs / settings.temperature, dim=-1)
        probs = _filter_top_p(scaled, settings.top_p).exp()
        return torch.multinomial(probs, 1).squeeze(1)

    def _completion(
        self,
        prompt_index: int,
        tokens: torch.Tensor,
        log_probs: torch.Tensor,
        expert_log_probs: torch.Tensor,
        encoded,
    ) -> Completion:
        kept = tokens.tolist()
        cut = next((i + 1 for i, t in enumerate(kept) if t in self.end_ids), len(kept))
        reason = "eos" if cut <= len(kept) and kept[cut - 1] in self.end_ids else "length"
        kept = kept[:cut]
        return Completion(
            prompt_index=prompt_index,
            text=self.tokenizer.decode(kept, skip_special_tokens=True),
            token_ids=kept,
            logprobs=log_probs[:cut].clone(),
            finish_reason=reason,
            prompt_token_ids=list(encoded[prompt_index]),
            expert_logprobs=expert_log_probs[:cut].clone(),
        )
