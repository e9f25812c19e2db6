"""Rewards-in-Context's arithmetic (Yang et al. 2024), re-derived here; every function is pure and tested.

* Normalisation: each objective's reward z-scored with the mean and (population) std of the training data,
  then rounded to `decimals` (one in the paper), so the numbers in the prompt share one scale.
* Format: the scores go at the end of the (last) user turn as RiC's tags in objective order,
  `<rm1_score> 0.6 <rm2_score> -1.2`; the reply is learned with the scores in its prompt. `method.tags=names`
  (not the paper) names each objective instead, `<concise_score> 0.6 <positivity_score> -1.2`, so a small model
  can read which number is which from words it already knows.
* Preference -> rewards to request (the paper's mapping, `linf`): the objective with the largest weight asks for
  its maximum; every other objective i asks for min(N·w_i, 1)·(max_i − min_i) + min_i, N the number of objectives.
  `l2` (w_i/‖w‖₂ in place of min(N·w_i, 1), for every objective: the reference evaluation script) and `linear`
  (w_i) are the alternatives. max_i/min_i are the normalised training scores' extremes.
* Online targets "around the front": draw one uniform point per objective in [min_i, max_i]; the objective with
  the lowest draw (as a fraction of its range) keeps it, all others ask for their maximum.
* Front extension (multi-objective rejection sampling): keep a sample when at least one of its scores reaches
  that objective's `quantile` (0.7) over the set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, fields

import torch

MAPPINGS = ("linf", "l2", "linear")


def score_tag(index: int) -> str:
    """RiC's tag of the index-th objective (0-based in, 1-based out)."""
    return f"<rm{index + 1}_score>"


def format_score(value: float, decimals: int) -> str:
    text = f"{round(float(value), decimals):.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.0"


def named_tags(names: Sequence[str]) -> tuple[str, ...]:
    """`<concise_score>`, ...: the tags of `method.tags=names`."""
    return tuple(f"<{name}_score>" for name in names)


def scores_text(scores: Sequence[float], decimals: int, tags: Sequence[str] = ()) -> str:
    """`<rm1_score> 0.6 <rm2_score> -1.2`, or with `tags` in place of the paper's numbered ones."""
    tags = tags or [score_tag(i) for i in range(len(scores))]
    return " ".join(f"{tag} {format_score(s, decimals)}" for tag, s in zip(tags, scores, strict=True))


def with_scores(
    messages: Sequence[dict], scores: Sequence[float], decimals: int, tags: Sequence[str] = ()
) -> list[dict]:
    """The conversation with the scores written after the last user turn's text (the reply is left as is)."""
    messages = [dict(m) for m in messages]
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    messages[last]["content"] = f"{messages[last]['content'].rstrip()} {scores_text(scores, decimals, tags)}"
    return messages


@dataclass(frozen=True)
class ScoreScale:
    """The objectives' training statistics: z-score constants and the normalised scores' range."""

    names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    decimals: int = 1
    tags: tuple[str, ...] = ()  # () = the paper's <rm1_score>, ... (and every run made before the option)

    @classmethod
    def fit(
        cls,
        names: Sequence[str],
        raw: torch.Tensor,
        zscore: bool = True,
        decimals: int = 1,
        tags: tuple[str, ...] = (),
    ) -> ScoreScale:
        """Statistics of raw training scores [N, K]; `zscore=False` keeps raw scores (mean 0, std 1)."""
        raw = raw.double()
        mean = raw.mean(0) if zscore else torch.zeros(raw.shape[1], dtype=torch.float64)
        std = raw.std(0, correction=0) if zscore else torch.ones(raw.shape[1], dtype=torch.float64)
        std = torch.where(std < 1e-12, torch.ones_like(std), std)  # a constant objective is only centred
        scale = cls(tuple(names), tuple(mean.tolist()), tuple(std.tolist()), (), (), decimals)
        normalised = scale.normalise(raw)
        return cls(
            scale.names,
            scale.mean,
            scale.std,
            tuple(normalised.min(0).values.tolist()),
            tuple(normalised.max(0).values.tolist()),
            decimals,
            tags,
        )

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        """(raw − mean) / std, rounded to `decimals`, as written into prompts."""
        z = (raw.double() - torch.tensor(self.mean, dtype=torch.float64)) / torch.tensor(
            self.std, dtype=torch.float64
        )
        return torch.round(z, decimals=self.decimals)

    def prompted(self, messages: Sequence[dict], scores: Sequence[float]) -> list[dict]:
        """The conversation with `scores` written in this scale's format."""
        return with_scores(messages, scores, self.decimals, self.tags)

    def text(self, scores: Sequence[float]) -> str:
        return scores_text(scores, self.decimals, self.tags)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ScoreScale:
        """A scale read back from a run folder (untrusted): ValueError naming the first bad field."""
        if not isinstance(data, dict):
            raise ValueError(f"the score scale must be a mapping, got {type(data).__name__}")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"the score scale has unknown fields {sorted(unknown)}")
        missing = {f.name for f in fields(cls) if f.default is MISSING} - set(data)
        if missing:
            raise ValueError(f"the score scale lacks {sorted(missing)}")
        decimals = data.get("decimals", 1)
        if not isinstance(decimals, int) or isinstance(decimals, bool) or not 0 <= decimals <= 6:
            raise ValueError(f"the score scale's decimals must be an integer in [0, 6], got {decimals!r}")
        kinds = {"names": str, "mean": float, "std": float, "low": float, "high": float, "tags": str}
        values = {}
        for key, kind in kinds.items():
            value = data.get(key, [])
            if not isinstance(value, list | tuple) or not all(_is(v, kind) for v in value):
                raise ValueError(f"the score scale's {key} must be a list of {kind.__name__}, got {value!r}")
            values[key] = tuple(float(v) if kind is float else v for v in value)
        count = len(values["names"])
        for key in ("mean", "std", "low", "high") + (("tags",) if values["tags"] else ()):
            if len(values[key]) != count:
                raise ValueError(
                    f"the score scale's {key} has {len(values[key])} entries for {count} objectives"
                )
        if min(values["std"], default=1.0) <= 0:
            raise ValueError(f"the score scale's std must be positive, got {list(values['std'])}")
        return cls(**values, decimals=decimals)


def _is(value: object, kind: type) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, kind)


def rewards_for_preference(
    weights: Sequence[float],
    low: Sequence[float],
    high: Sequence[float],
    mapping: str = "linf",
    decimals: int = 1,
) -> list[float]:
    """The rewards to request for preference weights on the simplex (the module docstring's mapping)."""
    n = len(weights)
    if mapping == "linf":
        top = max(range(n), key=lambda i: weights[i])  # the first of equal largest weights
        fractions = [1.0 if i == top else min(n * weights[i], 1.0) for i in range(n)]
    elif mapping == "l2":
        norm = math.sqrt(sum(w * w for w in weights))
        fractions = [w / norm for w in weights]
    elif mapping == "linear":
        fractions = list(weights)
    else:
        raise ValueError(f"unknown RiC mapping {mapping!r}; expected one of {MAPPINGS}")
    return [round(f * (hi - lo) + lo, decimals) for f, lo, hi in zip(fractions, low, high, strict=True)]


def front_targets(
    count: int, low: Sequence[float], high: Sequence[float], generator: torch.Generator, decimals: int = 1
) -> torch.Tensor:
    """[count, K] targets: one objective (the lowest uniform draw) at its draw, every other at its maximum."""
    low_t, high_t = torch.tensor(low, dtype=torch.float64), torch.tensor(high, dtype=torch.float64)
    fraction = torch.rand(count, len(low), generator=generator, dtype=torch.float64)
    targets = high_t.expand(count, -1).clone()
    keep = fraction.argmin(dim=1)
    rows = torch.arange(count)
    targets[rows, keep] = low_t[keep] + fraction[rows, keep] * (high_t[keep] - low_t[keep])
    return torch.round(targets, decimals=decimals)


def extends_front(scores: torch.Tensor, quantile: float = 0.7) -> torch.Tensor:
    """[N] bool: rows with at least one score at or above that objective's `quantile` over the rows."""
    if scores.shape[0] == 0:
        return torch.zeros(0, dtype=torch.bool)
    thresholds = torch.quantile(scores.double(), quantile, dim=0)
    return (scores.double() >= thresholds).any(dim=1)
