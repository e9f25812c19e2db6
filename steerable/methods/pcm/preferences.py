"""Preference dimensions with two opposite sides; a composite preference picks one side per dimension.

Expert i is the LoRA adapter trained for side i (in `sides()` order). A side's reward is its dimension's score,
negated for the low side, so "concise" prefers fewer words and "detailed" more.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from steerable.config.schema import ConfigError


@dataclass(frozen=True)
class Dimension:
    name: str  # a reward source of the run and a label of the data
    low: str
    high: str


def parse_dimensions(items: list[str]) -> list[Dimension]:
    return [Dimension(*item.split(":")) for item in items]


def sides(dimensions: list[Dimension]) -> list[str]:
    return [s for d in dimensions for s in (d.low, d.high)]


def combinations(dimensions: list[Dimension]) -> list[tuple[str, ...]]:
    """Every composite preference (2^D of them), in a fixed order."""
    return list(itertools.product(*[(d.low, d.high) for d in dimensions]))


def describe(preference: tuple[str, ...]) -> str:
    """The preference description the controller and the prompting baselines read."""
    return "Preference: " + ", ".join(preference)


def parse_preference(text: str, dimensions: list[Dimension]) -> tuple[str, ...]:
    """`"concise, friendly"` -> one side per dimension in dimension order; unknown or missing sides are errors."""
    wanted = [w.strip() for w in text.split(",") if w.strip()]
    chosen = []
    for d in dimensions:
        picked = [w for w in wanted if w in (d.low, d.high)]
        if len(picked) != 1:
            raise ConfigError(
                f"preference={text!r} must name exactly one of {d.low}/{d.high} for dimension {d.name}"
            )
        chosen.append(picked[0])
    unknown = sorted(set(wanted) - set(chosen))
    if unknown:
        raise ConfigError(f"preference={text!r}: unknown side(s) {unknown}; sides are {sides(dimensions)}")
    return tuple(chosen)


def active(preference: tuple[str, ...], dimensions: list[Dimension]) -> torch.Tensor:
    """[n] bool: the experts a preference merges."""
    return torch.tensor([s in preference for s in sides(dimensions)])


def side_sign(side: str, dimensions: list[Dimension]) -> tuple[str, float]:
    """(dimension name, +1 for the high side / -1 for the low side)."""
    for d in dimensions:
        if side in (d.low, d.high):
            return d.name, 1.0 if side == d.high else -1.0
    raise KeyError(side)


def composite_probabilities(
    leaning: dict[str, float], dimensions: list[Dimension]
) -> list[tuple[tuple[str, ...], float]]:
    """Each composite preference with its probability when every dimension independently takes its high side
    with probability `leaning[name]` (in [0, 1]); those of probability 0 are left out. At leanings of 0 or 1
    this is the one preference those sides name."""
    out = []
    for preference in combinations(dimensions):
        p = 1.0
        for d, side in zip(dimensions, preference, strict=True):
            p *= leaning[d.name] if side == d.high else 1.0 - leaning[d.name]
        if p > 0:
            out.append((preference, p))
    return out
