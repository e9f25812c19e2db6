"""Deterministic, model-free reward sources: verbosity, readability and sentiment.

They are the cheap, reproducible objectives for steering experiments and smoke runs: no weights, no
network, identical scores on every machine. Each scores the response only; the prompt is ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, Literal

import torch

from steerable.rewards.base import RewardSource

__all__ = [
    "LengthScorer",
    "ReadabilityScorer",
    "SentimentScorer",
    "count_sentences",
    "count_syllables",
    "flesch_kincaid_grade",
    "flesch_reading_ease",
    "split_words",
]


class LengthScorer(RewardSource):
    """Verbosity: word count (whitespace-separated) or token count under a given tokenizer.

    ``empty`` replaces the score of a reply with no words (a training reward that should not be won by saying
    nothing; None keeps the formula's value).
    ``log_scale`` uses ``log1p(n)`` so that 10→20 words counts as much as 100→200. With ``target``
    the reward becomes closeness ``-|f(n) - f(target)|`` (0 at the target, more negative further away;
    ``f`` is identity or ``log1p``), for "answer in about N words" style steering.
    """

    def __init__(
        self,
        unit: Literal["words", "tokens"] = "words",
        tokenizer: Any | None = None,
        log_scale: bool = False,
        target: float | None = None,
        name: str = "length",
        empty: float | None = None,
    ) -> None:
        if unit not in ("words", "tokens"):
            raise ValueError(f"unit must be 'words' or 'tokens', got {unit!r}")
        if unit == "tokens" and tokenizer is None:
            raise ValueError("unit='tokens' needs a tokenizer (object or name/path)")
        if target is not None and target < 0:
            raise ValueError(f"target length must be >= 0, got {target}")
        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        self.unit = unit
        self.tokenizer = tokenizer if unit == "tokens" else None
        self.log_scale = log_scale
        self.target = target
        self.empty = empty
        self.names = [name]

    @property
    def measure(self) -> str:
        if self.target is not None:
            return f"closeness to {self.target:g} {self.unit}"
        return f"log {self.unit}" if self.log_scale else self.unit

    def counts(self, responses: Sequence[str]) -> list[int]:
        """Raw lengths in the chosen unit (special tokens excluded: they are not verbosity)."""
        if self.tokenizer is None:
            return [len(r.split()) for r in responses]
        ids = self.tokenizer(list(responses), add_special_tokens=False)["input_ids"]
        return [len(x) for x in ids]

    def _transform(self, n: float) -> float:
        return math.log1p(n) if self.log_scale else float(n)

    def _score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        counts = self.counts(responses)
        values = [self._transform(n) for n in counts]
        if self.target is not None:
            goal = self._transform(self.target)
            values = [-abs(v - goal) for v in values]
        if self.empty is not None:  # a reply that says nothing is not the shortest answer
            values = [self.empty if n == 0 else v for n, v in zip(counts, values, strict=True)]
        return torch.tensor(values, dtype=torch.float32).unsqueeze(1)


# ---------------------------------------------------------------- readability
# textstat was considered and rejected: its English syllable counter calls nltk.download("cmudict")
# on first use, i.e. it needs the network at run time. The heuristic below is self-contained.

_WORD_RE = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)*")
_SENTENCE_END_RE = re.compile(r"[.!?]+")
_VOWEL_GROUP_RE = re.compile(r"[aeiouy]+")
_VOWELS = set("aeiouy")


def split_words(text: str) -> list[str]:
    """Words for readability: runs of letters/digits, with inner apostrophes kept (``don't``)."""
    return _WORD_RE.findall(text)


def count_sentences(text: str) -> int:
    """Sentences = ``.!?``-separated segments that contain a word; text without a terminator is one."""
    return sum(1 for segment in _SENTENCE_END_RE.split(text) if _WORD_RE.search(segment))


def count_syllables(word: str) -> int:
    """English syllable estimate (heuristic, no dictionary).

    1. Keep letters only, lower-case; a word without letters (a number) counts as 1.
    2. Words of at most 3 letters count as 1.
    3. Count maximal vowel groups ``[aeiouy]+`` (so ``beautiful`` → eau-i-u = 3).
    4. If more than one group, drop a silent ending: final ``e`` (``make``), except consonant+``le``
       (``table``) and ``ee`` (``free``); final ``es`` except after s, x, z, ch, sh, c, g
       (``makes`` vs ``boxes``); final ``ed`` except after t, d (``jumped`` vs ``wanted``).
    5. At least 1.

    It misses cases such as ``recipe`` or split vowels (``create``); readability is used as a relative,
    normalised reward, so systematic small errors matter little, but it is not a dictionary lookup.
    """
    w = "".join(ch for ch in word.lower() if "a" <= ch <= "z")
    if not w:
        return 1
    if len(w) <= 3:
        return 1
    count = len(_VOWEL_GROUP_RE.findall(w))
    if count > 1:
        if w.endswith("e"):
            consonant_le = w.endswith("le") and w[-3] not in _VOWELS
            if not consonant_le and not w.endswith("ee"):
                count -= 1
        elif w.endswith("es"):
            if not (w[-3] in "sxzcg" or w[-4:-2] in ("ch", "sh")):
                count -= 1
        elif w.endswith("ed") and w[-3] not in "td":
            count -= 1
    return max(count, 1)


def _counts(text: str) -> tuple[int, int, int]:
    words = split_words(text)
    return len(words), max(count_sentences(text), 1), sum(count_syllables(w) for w in words)


def flesch_reading_ease(text: str) -> float:
    """Flesch (1948): ``206.835 − 1.015·words/sentences − 84.6·syllables/words``; higher = easier."""
    n_words, n_sent, n_syl = _counts(text)
    if n_words == 0:
        raise ValueError("Flesch reading ease is undefined for text without words")
    return 206.835 - 1.015 * (n_words / n_sent) - 84.6 * (n_syl / n_words)


def flesch_kincaid_grade(text: str) -> float:
    """Flesch–Kincaid (1975): ``0.39·words/sentences + 11.8·syllables/words − 15.59``; US grade level."""
    n_words, n_sent, n_syl = _counts(text)
    if n_words == 0:
        raise ValueError("Flesch-Kincaid grade is undefined for text without words")
    return 0.39 * (n_words / n_sent) + 11.8 * (n_syl / n_words) - 15.59


_READABILITY_METRICS = {
    "flesch_reading_ease": flesch_reading_ease,
    "flesch_kincaid_grade": flesch_kincaid_grade,
}


class ReadabilityScorer(RewardSource):
    """Flesch reading ease and/or Flesch–Kincaid grade of the response, one column per metric.

    Scores are not clipped (very short or very long sentences leave the nominal 0–100 / grade range).
    A response without words has no defined readability and gets ``empty_value`` (default 0.0, i.e.
    "very hard" on the reading-ease scale, so an empty answer is never rewarded for being easy).
    """

    def __init__(
        self,
        metrics: Sequence[str] | str = ("flesch_reading_ease",),
        empty_value: float = 0.0,
    ) -> None:
        metrics = [metrics] if isinstance(metrics, str) else list(metrics)
        if not metrics:
            raise ValueError("ReadabilityScorer needs at least one metric")
        unknown = [m for m in metrics if m not in _READABILITY_METRICS]
        if unknown:
            raise ValueError(
                f"unknown readability metrics {unknown}; choose from {list(_READABILITY_METRICS)}"
            )
        self.metrics = metrics
        self.empty_value = float(empty_value)
        self.names = list(metrics)

    def _score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        rows = []
        for response in responses:
            if not split_words(response):
                rows.append([self.empty_value] * len(self.metrics))
            else:
                rows.append([_READABILITY_METRICS[m](response) for m in self.metrics])
        return torch.tensor(rows, dtype=torch.float32)


# ---------------------------------------------------------------- sentiment


class SentimentScorer(RewardSource):
    """Positivity from VADER (Hutto & Gilbert 2014), the ``vaderSentiment`` package.

    The default output is the ``compound`` score in [-1, 1]; ``outputs`` may add VADER's ``pos``,
    ``neu`` and ``neg`` proportions. VADER is rule/lexicon based: the lexicon ships inside the package,
    so it is deterministic and offline. An empty response scores 0 compound (neutral), as VADER gives.
    """

    _OUTPUTS = ("compound", "pos", "neu", "neg")

    @property
    def measure(self) -> str:
        return "VADER compound, -1 to 1" if self.names[0] == "sentiment" else f"VADER {self.names[0]}"

    def __init__(self, outputs: Sequence[str] | str = ("compound",)) -> None:
        outputs = [outputs] if isinstance(outputs, str) else list(outputs)
        unknown = [o for o in outputs if o not in self._OUTPUTS]
        if not outputs or unknown:
            raise ValueError(f"outputs must be a non-empty subset of {self._OUTPUTS}, got {outputs}")
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                "SentimentScorer needs the 'vaderSentiment' package (pip install vaderSentiment)"
            ) from err
        self._analyzer = SentimentIntensityAnalyzer()
        self.outputs = outputs
        self.names = [f"sentiment_{o}" if o != "compound" else "sentiment" for o in outputs]

    def _score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        rows = []
        for response in responses:
            polarity = self._analyzer.polarity_scores(response)
            rows.append([float(polarity[o]) for o in self.outputs])
        return torch.tensor(rows, dtype=torch.float32)
