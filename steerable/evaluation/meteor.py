"""METEOR similarity, and SuperHF's cross-prompt METEOR as a mode-collapse / reward-hacking watch.

Wraps ``nltk.translate.meteor_score`` (Lavie & Agarwal 2007 form with NLTK's defaults α=0.9, β=3, γ=0.5) so the
numbers match SuperHF's ``nltk.meteor_score([a.split()], b.split())`` (steerlm_superhf.md B8). Matching stages
are exact → Porter stem → WordNet synonym. NLTK never downloads data by itself, but its WordNet stage raises
LookupError when the corpus is missing; we detect that once and hand NLTK a reader with no synonyms instead,
so offline machines still get exact + stem METEOR (slightly lower than with synonyms; report which was used via
:func:`wordnet_available`).
"""

from __future__ import annotations

import functools
import zipfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from nltk.stem.api import StemmerI
from nltk.stem.porter import PorterStemmer
from nltk.translate.meteor_score import single_meteor_score

__all__ = ["mean_pairwise_meteor", "meteor", "wordnet_available"]

Tokens = str | Sequence[str]


class _NoSynonyms:
    """Stand-in for ``nltk.corpus.wordnet``: every word has no synsets, so the synonym stage matches nothing."""

    def synsets(self, *_args: Any, **_kwargs: Any) -> list[Any]:
        return []


_PORTER = PorterStemmer()


@functools.lru_cache(maxsize=200_000)
def _porter_stem(token: str) -> str:
    return _PORTER.stem(token)


class _CachedPorter(StemmerI):
    """Porter stemmer with memoisation: pairwise METEOR stems the same words over and over."""

    def stem(self, token: str) -> str:
        return _porter_stem(token)


_STEMMER = _CachedPorter()


@functools.lru_cache(maxsize=1)
def _load_wordnet() -> Any | None:
    """The NLTK WordNet reader if its data is installed locally, else None. Never downloads."""
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        # Force the index to be read: a corrupt or partial install fails here, not in the middle of an eval.
        wordnet.synsets("dog")
        return wordnet
    except (LookupError, OSError, zipfile.BadZipFile, ImportError):
        return None


def wordnet_available() -> bool:
    """Whether synonym matching is active; log it next to METEOR numbers, which shift slightly without it."""
    return _load_wordnet() is not None


def _tokens(text: Tokens, tokenizer: Callable[[str], list[str]]) -> list[str]:
    return tokenizer(text) if isinstance(text, str) else list(text)


def meteor(
    hypothesis: Tokens,
    reference: Tokens,
    *,
    use_wordnet: bool | None = None,
    tokenizer: Callable[[str], list[str]] = str.split,
    alpha: float = 0.9,
    beta: float = 3.0,
    gamma: float = 0.5,
) -> float:
    """Sentence METEOR of ``hypothesis`` against one ``reference`` (asymmetric: recall is w.r.t. the reference).

    score = Fmean · (1 − γ·(chunks/matches)^β), Fmean = P·R / (α·P + (1−α)·R); 0 when nothing matches.
    Strings are lower-cased and split with ``tokenizer`` (whitespace by default, as SuperHF does; punctuation stays
    attached to words). ``use_wordnet``: None = synonyms if WordNet data is installed, False = never (reproducible
    across machines), True = require it (RuntimeError if missing).
    """
    wn = _load_wordnet() if use_wordnet is not False else None
    if use_wordnet and wn is None:
        raise RuntimeError(
            "use_wordnet=True but NLTK WordNet data is not installed (nltk.download('wordnet'))"
        )
    return float(
        single_meteor_score(
            _tokens(reference, tokenizer),
            _tokens(hypothesis, tokenizer),
            stemmer=_STEMMER,
            wordnet=wn if wn is not None else _NoSynonyms(),
            alpha=alpha,
            beta=beta,
            gamma=gamma,
        )
    )


def _pair_from_index(k: int, n: int) -> tuple[int, int]:
    """k-th ordered pair (i, j), i ≠ j, in row-major order over the n·(n−1) off-diagonal pairs."""
    i, r = divmod(k, n - 1)
    return i, (r if r < i else r + 1)


def mean_pairwise_meteor(
    texts: Sequence[str],
    max_pairs: int | None = None,
    seed: int = 0,
    *,
    use_wordnet: bool | None = None,
) -> float:
    """Mean METEOR over ordered pairs of distinct texts (both orders, since METEOR is asymmetric).

    Pass one completion per prompt (prompt stripped): completions to *different* prompts should share little, so
    a rising value means the policy answers everything alike (mode collapse / reward hacking, SuperHF B8).
    All n·(n−1) pairs by default (quadratic cost); ``max_pairs`` samples that many distinct ordered pairs
    uniformly without replacement, reproducibly from ``seed``. nan for fewer than two texts.
    """
    n = len(texts)
    if n < 2:
        return float("nan")
    total = n * (n - 1)
    if max_pairs is None or max_pairs >= total:
        ks: Sequence[int] | np.ndarray = range(total)
    elif max_pairs <= 0:
        raise ValueError(f"max_pairs must be positive, got {max_pairs}")
    elif total <= 4 * max_pairs or total <= 1_000_000:
        ks = np.random.default_rng(seed).choice(total, size=max_pairs, replace=False)
    else:  # huge n: rejection-sample distinct pair ids instead of materialising a permutation of all pairs
        rng, seen = np.random.default_rng(seed), set[int]()
        while len(seen) < max_pairs:
            seen.update(int(k) for k in rng.integers(0, total, size=max_pairs - len(seen)))
        ks = sorted(seen)
    tokens = [t.split() for t in texts]
    scores = []
    for k in ks:
        i, j = _pair_from_index(int(k), n)
        scores.append(meteor(tokens[j], tokens[i], use_wordnet=use_wordnet))  # reference = texts[i]
    return float(np.mean(scores))
