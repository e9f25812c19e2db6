"""A trained reward model or attribute model (a run folder of this project) as a reward source."""

from __future__ import annotations

from pathlib import Path

import torch

from steerable.data.tokenize import pad_rows
from steerable.rewards.base import RewardSource
from steerable.rewards.scoring_model import load_scorer, render_scored


class CheckpointReward(RewardSource):
    """Scores (prompt, response) with a saved ScoringModel; `outputs` picks attributes by name."""

    def __init__(self, path: str, outputs: list[str] | None = None, batch_size: int = 8, device: str = "cpu"):
        self.model, self.tokenizer, self.meta = load_scorer(Path(path))
        self.model.to(device)
        unknown = sorted(set(outputs or []) - set(self.meta.names))
        if unknown:
            raise ValueError(f"{path} predicts {self.meta.names}; it has no output named {unknown}")
        self.names = list(outputs) if outputs else list(self.meta.names)
        self.columns = [self.meta.names.index(n) for n in self.names]
        self.batch_size = batch_size
        self.device = device

    def _score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        sequences = [
            render_scored(self.tokenizer, [{"role": "user", "content": p}], r, self.meta.max_length)
            for p, r in zip(prompts, responses, strict=True)
        ]
        scores = []
        for start in range(0, len(sequences), self.batch_size):
            ids, mask = pad_rows(sequences[start : start + self.batch_size], self.tokenizer.pad_token_id)
            scores.append(self.model(ids.to(self.device), mask.to(self.device)).float().cpu())
        return torch.cat(scores)[:, self.columns]
