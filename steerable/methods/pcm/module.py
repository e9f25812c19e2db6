"""PCM's REBEL loop as a LightningModule: one round samples two replies per (prompt, preference) from the
current mixture, rewards them against the cached reference, then trains the controller on the cached expert
log-probs."""

from __future__ import annotations

import torch

from steerable.budget import record_trained
from steerable.data.tokenize import pad_rows
from steerable.generation import settings_from
from steerable.generation.mixture import MixtureSampler
from steerable.methods.pcm.config import PCMConfig
from steerable.methods.pcm.controller import aligned_log_alpha, mixture_log_likelihood, rebel_loss
from steerable.methods.pcm.policy import Mixture, controller_prefix, controller_weights
from steerable.methods.pcm.preferences import active
from steerable.methods.pcm.rewards import BTRewards
from steerable.training.diagnostics import mixture_diagnostics
from steerable.training.online import OnlineModule


class PCMModule(OnlineModule):
    """One step: sample two responses per (prompt, preference) from the current mixture, reward them against the
    cached reference, then `epochs` REBEL updates of the controller on the cached expert log-probs."""

    def __init__(self, parts: Mixture, rewards: BTRewards, m: PCMConfig, optim, sampler):
        super().__init__(parts.controller, optim, sampler=sampler, batch_size=m.batch_size)
        self.automatic_optimization = False
        self.updates_per_round = m.epochs  # REBEL updates on each round's samples
        self.hold_frozen("experts", parts.experts)
        self.history: list[dict[str, float]] = []  # this rank's metrics per round, for the diagnostics report
        self.tokenizer, self.mixer, self.dims = parts.tokenizer, parts.mixer, parts.dims
        self.rewards, self.m = rewards, m
        self.generation = settings_from(m.sampling, batch_size=16)

    def training_step(self, items: list, batch_idx: int) -> None:
        pairs = [
            item for item in items for _ in range(2)
        ]  # rows 2i and 2i+1 answer the same (prompt, preference)
        self.rewards.cache_references(self.experts, self.tokenizer, pairs, self.generation)
        weights = controller_weights(self.model, self.tokenizer, pairs, self.dims, self.device)
        samples = MixtureSampler(self.mixer, self.tokenizer).generate(
            [p for p, _ in pairs], self.generation, weights
        )
        terms = self.rewards.terms(pairs, [s.text for s in samples])
        reward = torch.tensor([sum(t.values()) / len(t) for t in terms], device=self.device)
        ids, mask, response, experts_lp, masks = self._batch(pairs, samples)
        with torch.no_grad():
            sampled_alpha = aligned_log_alpha(self.model(ids, mask, masks))
            old = mixture_log_likelihood(sampled_alpha, experts_lp, response)
        diagnostics = mixture_diagnostics(self.mixer.names, masks, sampled_alpha, response, terms)
        optimizer = self.optimizers()
        for _ in range(self.m.epochs):
            log_alpha = aligned_log_alpha(self.model(ids, mask, masks))
            loss = rebel_loss(
                mixture_log_likelihood(log_alpha, experts_lp, response), old, reward, self.m.eta
            )
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            record_trained(mask.sum())
        self.lr_schedulers().step()
        metrics = {"train/loss": float(loss.detach()), "train/reward": float(reward.mean()), **diagnostics}
        self.history.append(metrics)
        self.log_dict(metrics, batch_size=len(items), sync_dist=True)

    def _batch(self, pairs, samples):
        rows, starts = [], []
        for (prompt, pref), s in zip(pairs, samples, strict=True):
            prefix = controller_prefix(self.tokenizer, prompt, pref)
            starts.append(len(prefix))
            rows.append(prefix + s.token_ids)
        ids, mask = pad_rows(rows, self.tokenizer.pad_token_id)
        response = torch.zeros_like(mask)
        experts_lp = torch.zeros(*ids.shape, len(self.mixer.names))
        for k, (start, s) in enumerate(zip(starts, samples, strict=True)):
            response[k, start : start + len(s.token_ids)] = 1
            experts_lp[k, start : start + len(s.token_ids)] = s.expert_logprobs
        masks = torch.stack([active(pref, self.dims) for _, pref in pairs])
        return (
            ids.to(self.device),
            mask.to(self.device),
            response.to(self.device),
            experts_lp.to(self.device),
            masks.to(self.device),
        )
