"""PCM's rewards: per requested side, a Bradley-Terry term of the reply's score against one cached reference
reply per (prompt, preference) from the preference-prompted base model."""

from __future__ import annotations

import torch

from steerable.backbone.adapters import reference_policy
from steerable.data.records import user_text
from steerable.generation import GenerationSettings, make_sampler
from steerable.methods.pcm.preferences import Dimension, describe, side_sign
from steerable.rewards.base import build_reward_source
from steerable.rewards.normalize import bradley_terry


class BTRewards:
    """R(x, y, ξ) = mean over ξ's sides of σ(β·(s·r_d(x, y) − s·r_d(x, y_ref))) with y_ref one cached reference
    response per (prompt, preference): the preference-prompted base model, sampled once (spec §2.4)."""

    def __init__(self, rewards: dict, dims: list[Dimension], beta: float) -> None:
        self.sources = {d.name: build_reward_source(rewards[d.name]) for d in dims}
        self.dims, self.beta = dims, beta
        self.reference: dict[str, dict[str, float]] = {}

    def scores(self, prompts: list[str], texts: list[str]) -> dict[str, torch.Tensor]:
        return {name: source.score(prompts, texts)[:, 0] for name, source in self.sources.items()}

    def cache_references(self, model, tokenizer, items, settings: GenerationSettings) -> None:
        todo = [(p, pref) for p, pref in items if _key(p, pref) not in self.reference]
        if not todo:
            return
        with reference_policy(model):
            texts = [
                c.text
                for c in make_sampler(model, tokenizer).generate(
                    [prompted(p, pref) for p, pref in todo], settings
                )
            ]
        scores = self.scores([user_text(p) for p, _ in todo], texts)
        for k, (p, pref) in enumerate(todo):
            self.reference[_key(p, pref)] = {name: float(v[k]) for name, v in scores.items()}

    def side_terms(self, items, texts: list[str]) -> torch.Tensor:
        """[B, sides per preference] float64: each requested side's Bradley-Terry term against the cached
        reference reply. A low side prefers the lower score: σ(β·s·(r − r_ref)) with s = −1 on both scores."""
        scores = self.scores([user_text(p) for p, _ in items], texts)
        column = {d.name: i for i, d in enumerate(self.dims)}
        table = torch.stack([scores[d.name] for d in self.dims], 1).double()  # [B, D]
        chosen = [[side_sign(side, self.dims) for side in pref] for _, pref in items]
        # which column of `table` each side reads, and its direction
        index = torch.tensor([[column[name] for name, _ in row] for row in chosen])
        signs = torch.tensor([[sign for _, sign in row] for row in chosen], dtype=torch.float64)
        refs = [
            [self.reference[_key(p, pref)][name] for name, _ in row]
            for (p, pref), row in zip(items, chosen, strict=True)
        ]
        ours, theirs = table.gather(1, index), torch.tensor(refs, dtype=torch.float64)
        return bradley_terry(signs * ours, signs * theirs, self.beta)

    def terms(self, items, texts: list[str]) -> list[dict[str, float]]:
        """Per row, each requested side's term by side name (for the training diagnostics)."""
        table = self.side_terms(items, texts)
        return [
            dict(zip(pref, row.tolist(), strict=True)) for (_, pref), row in zip(items, table, strict=True)
        ]

    def __call__(self, items, texts: list[str]) -> torch.Tensor:
        """[B] float32: the mean of the requested sides' terms, rounded once at the end."""
        return self.side_terms(items, texts).mean(1).float()


def _key(prompt: list[dict], preference: tuple[str, ...]) -> str:
    return repr((prompt, preference))


def prompted(prompt: list[dict], preference: tuple[str, ...]) -> list[dict]:
    """Preference prompting: the description as the system message."""
    return [
        {"role": "system", "content": describe(preference)},
        *[x for x in prompt if x["role"] != "system"],
    ]
