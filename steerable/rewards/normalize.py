"""Reward normalisation with statistics frozen once, before training.

Multi-objective methods mix rewards with weights (CLP's ``w``, PCM's preference set ξ). Unless each
reward is put on a common scale, "w = 0.5" silently means "whichever reward has the larger scale".
The statistics are computed once on reference data and then frozen, and stored with the run, so every
method and every evaluation uses the same constants (clp_pcm.md §1.5, §2.4).

* ``ZScoreNormalizer``: ``(r − μ) / σ`` with μ, σ per output from reference-policy samples.
* ``BradleyTerryNormalizer``: ``σ(β·(r(x, y) − r(x, y_ref)))`` = P_BT(y ≻ y_ref), against one cached
  reference response per prompt (PCM Eq. 2).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch

from steerable.rewards.base import RewardSource

__all__ = [
    "BradleyTerryNormalizer",
    "NormalizedReward",
    "RewardNormalizer",
    "ZScoreNormalizer",
    "bradley_terry",
]


def bradley_terry(scores: torch.Tensor, reference: torch.Tensor, beta: float) -> torch.Tensor:
    """``σ(β·(r(x, y) − r(x, y_ref)))`` elementwise, in the inputs' dtype: P_BT(y ≻ y_ref) (PCM Eq. 2).

    ``torch.sigmoid`` saturates at 0 and 1 for any score gap; ``1 / (1 + math.exp(−x))`` raises OverflowError
    once ``−x`` passes ~709 (a length reward in words reaches that)."""
    return torch.sigmoid(beta * (scores - reference))


def _as_scores(scores: torch.Tensor) -> torch.Tensor:
    scores = torch.as_tensor(scores).detach().to(device="cpu", dtype=torch.float32)
    if scores.ndim == 1:
        scores = scores.unsqueeze(1)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [N, K], got shape {tuple(scores.shape)}")
    return scores


class RewardNormalizer(ABC):
    """Maps raw ``[B, K]`` scores to normalised ones using frozen statistics."""

    @property
    @abstractmethod
    def is_fitted(self) -> bool:
        """Whether the statistics exist; ``transform`` refuses to run before."""

    @abstractmethod
    def fit_from_scores(self, prompts: Sequence[str], scores: torch.Tensor) -> RewardNormalizer:
        """Freeze the statistics from raw scores of reference data (row i belongs to prompts[i])."""

    @abstractmethod
    def transform(self, scores: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        """Normalise ``[B, K]`` scores (prompts are needed by per-prompt normalisers)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """What to save with the run so that the same constants are used later."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore frozen statistics saved by ``state_dict``."""

    def __call__(self, scores: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        return self.transform(scores, prompts)

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(
                f"{type(self).__name__} is not fitted: call fit(...) on reference data or load_state_dict(...) first"
            )


class ZScoreNormalizer(RewardNormalizer):
    """Per-output ``(r − mean) / std`` with mean and std frozen at ``fit`` time.

    std is the population std (``correction=0``). An output whose std is below ``min_std`` (constant on
    the reference data) is only centred (std set to 1), rather than divided by ~0.
    """

    def __init__(self, min_std: float = 1e-6) -> None:
        self.min_std = float(min_std)
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self.count: int = 0

    @property
    def is_fitted(self) -> bool:
        return self.mean is not None

    def fit(self, scores: torch.Tensor, *, overwrite: bool = False) -> ZScoreNormalizer:
        """Freeze mean/std from ``[N, K]`` reference-policy scores; a second fit needs ``overwrite``."""
        if self.is_fitted and not overwrite:
            raise RuntimeError("ZScoreNormalizer is already fitted (frozen); pass overwrite=True to refit")
        scores = _as_scores(scores)
        if scores.shape[0] < 2:
            raise ValueError(f"need at least 2 reference scores to estimate a std, got {scores.shape[0]}")
        if not torch.isfinite(scores).all():
            raise ValueError("reference scores contain NaN or inf")
        mean = scores.mean(dim=0)
        std = scores.std(dim=0, correction=0)
        self.mean = mean
        self.std = torch.where(std < self.min_std, torch.ones_like(std), std)
        self.count = int(scores.shape[0])
        return self

    def fit_from_scores(self, prompts: Sequence[str], scores: torch.Tensor) -> ZScoreNormalizer:
        return self.fit(scores)

    def transform(self, scores: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        self._require_fitted()
        assert self.mean is not None and self.std is not None
        scores = _as_scores(scores)
        if scores.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"scores have {scores.shape[1]} outputs, normaliser was fitted on {self.mean.shape[0]}"
            )
        return (scores - self.mean) / self.std

    def state_dict(self) -> dict[str, Any]:
        self._require_fitted()
        assert self.mean is not None and self.std is not None
        return {
            "mean": self.mean.clone(),
            "std": self.std.clone(),
            "count": self.count,
            "min_std": self.min_std,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mean = torch.as_tensor(state["mean"], dtype=torch.float32).flatten()
        std = torch.as_tensor(state["std"], dtype=torch.float32).flatten()
        if mean.shape != std.shape:
            raise ValueError(f"mean {tuple(mean.shape)} and std {tuple(std.shape)} shapes differ")
        if (std <= 0).any():
            raise ValueError("std must be positive")
        self.mean, self.std = mean.clone(), std.clone()
        self.count = int(state.get("count", 0))
        self.min_std = float(state.get("min_std", self.min_std))


class BradleyTerryNormalizer(RewardNormalizer):
    """``σ(β·(r(x, y) − r(x, y_ref)))`` per output, with ``r(x, y_ref)`` cached once per prompt.

    This is P(y ≻ y_ref) under a Bradley–Terry model, which puts uncalibrated reward models on a common
    [0, 1] scale (0.5 = as good as the reference). ``beta = 1`` is the PCM paper's Eq. 2. The reference
    is one fixed response per prompt; an unseen prompt raises instead of silently using another one.
    """

    def __init__(self, beta: float = 1.0) -> None:
        if not beta > 0:
            raise ValueError(f"beta must be positive, got {beta}")
        self.beta = float(beta)
        self._index: dict[str, int] | None = None
        self.reference_scores: torch.Tensor | None = None

    @property
    def is_fitted(self) -> bool:
        return self.reference_scores is not None

    @property
    def prompts(self) -> list[str]:
        """Prompts with a cached reference score, in storage order."""
        return list(self._index or {})

    def fit(
        self, prompts: Sequence[str], reference_scores: torch.Tensor, *, overwrite: bool = False
    ) -> BradleyTerryNormalizer:
        """Cache ``r(x, y_ref)`` (``[N, K]``) for each prompt; a repeated prompt must repeat its score."""
        if self.is_fitted and not overwrite:
            raise RuntimeError(
                "BradleyTerryNormalizer is already fitted (frozen); pass overwrite=True to refit"
            )
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings, got a single str")
        scores = _as_scores(reference_scores)
        if scores.shape[0] != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {scores.shape[0]} reference score rows")
        if not torch.isfinite(scores).all():
            raise ValueError("reference scores contain NaN or inf")
        index: dict[str, int] = {}
        rows: list[torch.Tensor] = []
        for prompt, row in zip(prompts, scores, strict=True):
            if prompt in index:
                if not torch.equal(rows[index[prompt]], row):
                    raise ValueError(
                        f"prompt {prompt[:60]!r} has two different reference scores; use one y_ref per prompt"
                    )
                continue
            index[prompt] = len(rows)
            rows.append(row)
        self._index = index
        self.reference_scores = torch.stack(rows) if rows else torch.zeros(0, scores.shape[1])
        return self

    def fit_from_scores(self, prompts: Sequence[str], scores: torch.Tensor) -> BradleyTerryNormalizer:
        return self.fit(prompts, scores)

    def reference_for(self, prompts: Sequence[str]) -> torch.Tensor:
        """Cached ``[B, K]`` reference scores for these prompts."""
        self._require_fitted()
        assert self._index is not None and self.reference_scores is not None
        missing = [p for p in prompts if p not in self._index]
        if missing:
            raise KeyError(
                f"{len(missing)} prompt(s) have no cached reference score, e.g. {missing[0][:60]!r}"
            )
        return self.reference_scores[[self._index[p] for p in prompts]]

    def transform(self, scores: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        self._require_fitted()
        assert self.reference_scores is not None
        if prompts is None:
            raise ValueError("BradleyTerryNormalizer needs the prompts to look up reference scores")
        scores = _as_scores(scores)
        if scores.shape[0] != len(prompts):
            raise ValueError(f"got {scores.shape[0]} score rows for {len(prompts)} prompts")
        if scores.shape[1] != self.reference_scores.shape[1]:
            raise ValueError(
                f"scores have {scores.shape[1]} outputs, references have {self.reference_scores.shape[1]}"
            )
        return bradley_terry(scores, self.reference_for(prompts), self.beta)

    def state_dict(self) -> dict[str, Any]:
        self._require_fitted()
        assert self.reference_scores is not None
        return {"prompts": self.prompts, "reference_scores": self.reference_scores.clone(), "beta": self.beta}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.beta = float(state.get("beta", self.beta))
        self._index = None
        self.reference_scores = None
        self.fit(list(state["prompts"]), state["reference_scores"])


class NormalizedReward(RewardSource):
    """A source whose scores pass through a normaliser; same names and shape as the wrapped source.

    ``fit(prompts, responses)`` scores reference data with the wrapped source and freezes the
    normaliser: reference-policy samples for z-score, the fixed ``y_ref`` per prompt for Bradley–Terry.
    """

    def __init__(self, source: RewardSource, normalizer: RewardNormalizer) -> None:
        self.source = source
        self.normalizer = normalizer
        self.names = list(source.names)

    def fit(self, prompts: Sequence[str], responses: Sequence[str]) -> NormalizedReward:
        self.normalizer.fit_from_scores(list(prompts), self.source.score(prompts, responses))
        return self

    def _score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        return self.normalizer.transform(self.source.score(prompts, responses), prompts)
