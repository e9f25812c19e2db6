"""A leaderboard row: an arm's answers on the grid, kept per training seed, and the row those seeds make
together (the mean of each request's scores over seeds)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import numpy as np

from steerable.evaluation.answers import Answers, Cell
from steerable.evaluation.steering import Interval
from steerable.evaluation.suite import Arm

log = logging.getLogger(__name__)


@dataclass
class Row:
    """One line of the leaderboard: an arm, or another decoding of an arm's runs (`Arm (logit mixing)`).
    `by_seed`: what each training seed's runs answered; the row's numbers are their mean."""

    name: str
    arm: Arm
    by_seed: dict[int | None, Answers] = field(default_factory=dict)
    metrics: dict[str, Interval | None] = field(default_factory=dict)
    per_seed: dict[int | None, dict[str, float | None]] = field(default_factory=dict)  # only with 2+ seeds

    @property
    def hypervolume(self) -> float:
        hv = self.metrics.get("hypervolume")
        return hv.value if hv is not None else float("-inf")

    @property
    def answers(self) -> Answers:
        """The row's answers: its one seed's, or per request the mean over seeds of each prompt's scores (and
        log-ratios), with every seed's replies, and the decoding of all of them."""
        if len(self.by_seed) == 1:
            return next(iter(self.by_seed.values()))
        replicas = [a.cells for a in self.by_seed.values()]
        cells = [_mean_cell(list(same)) for same in zip(*replicas, strict=True)]
        tokens = sum(a.decode_tokens for a in self.by_seed.values())
        return Answers(cells, tokens, sum(a.decode_seconds for a in self.by_seed.values()))

    def add(self, seed: int | None, answers: Answers) -> None:
        """One run's answers, joined to its seed's replica (a sweep's runs each add their points)."""
        replica = self.by_seed.setdefault(seed, Answers([]))
        replica.cells += answers.cells
        replica.decode_tokens += answers.decode_tokens
        replica.decode_seconds += answers.decode_seconds

    def align_seeds(self) -> None:
        """Every seed must answer the same requests: each seed's cells in one order (by requested weights),
        and a seed whose runs answered other requests than the fullest seed's (a job that failed) is left out
        with a warning."""
        if len(self.by_seed) < 2:
            return
        for answers in self.by_seed.values():
            answers.cells.sort(key=_request_key)
        fullest = max(self.by_seed.values(), key=lambda a: len(a.cells))
        asked = [_request_key(c) for c in fullest.cells]
        for seed, answers in list(self.by_seed.items()):
            if [_request_key(c) for c in answers.cells] != asked:
                log.warning(
                    "leaderboard: %s seed %s left out, its runs answered other requests", self.name, seed
                )
                del self.by_seed[seed]


def _request_key(cell: Cell) -> str:
    return json.dumps(cell.weights, sort_keys=True)


def _mean_cell(same: list[Cell]) -> Cell:
    """One request's cells from several seeds as one: scores (and log-ratios) averaged prompt by prompt."""
    ratios = [c.log_ratio for c in same]
    return Cell(
        weights=same[0].weights,
        scores=np.mean([c.scores for c in same], axis=0),
        texts=[t for c in same for t in c.texts],
        log_ratio=np.mean(ratios, axis=0) if all(r is not None for r in ratios) else None,
        default=same[0].default,
    )
