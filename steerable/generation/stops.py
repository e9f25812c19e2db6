"""Where a generated response ends: end-of-turn token, stop string, or the token budget.

Kept separate from the sampler because it is pure (token ids + a decode function in, a cut out), so
any backend can reuse it and tests can pin it down without a model.

The stop-string cut is on token boundaries: we keep the longest prefix of response tokens whose
decoding is a prefix of the text before the first stop string. The kept text is that decoding, so
``decode(token_ids) == text`` always holds and neither contains the stop string. When one token
straddles the start of the stop string (e.g. token " ###" with stop "##"), its leading characters are
dropped from the text as well: log-probs then cover exactly the text a reward model scores.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from steerable.generation.base import FinishReason

Decode = Callable[[Sequence[int]], str]


@dataclass(frozen=True)
class Cut:
    num_tokens: int  # how many leading response tokens to keep
    text: str
    finish_reason: FinishReason


def first_stop(text: str, stop: Sequence[str]) -> int | None:
    """Character index where the earliest stop string starts, or None."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return min(hits) if hits else None


def longest_clean_prefix(tokens: Sequence[int], target: str, decode: Decode) -> int:
    """Most leading tokens whose decoding is a prefix of ``target`` (0 always qualifies)."""
    for k in range(len(tokens), 0, -1):
        if target.startswith(decode(tokens[:k])):
            return k
    return 0


def cut_response(
    tokens: Sequence[int],
    decode: Decode,
    end_ids: Collection[int],
    pad_id: int | None,
    stop: Sequence[str] = (),
) -> Cut:
    """Decide how much of a generated row (which may carry padding after it finished) to keep.

    The first end-of-turn id ends the response and is kept. Without one, trailing ``pad_id`` tokens
    are batch padding (the row stopped on a stop string) and are dropped. Stop strings are then
    searched in the decoded text; the earliest one wins over the end-of-turn token after it.
    """
    end = next((i for i, t in enumerate(tokens) if t in end_ids), None)
    if end is not None:
        body, kept, reason = tokens[:end], end + 1, "eos"
    else:
        n = len(tokens)
        while pad_id is not None and n > 0 and tokens[n - 1] == pad_id:
            n -= 1
        body, kept, reason = tokens[:n], n, "length"
    text = decode(body)
    at = first_stop(text, stop)
    if at is None:
        return Cut(kept, text, reason)
    k = longest_clean_prefix(body, text[:at], decode)
    return Cut(k, decode(body[:k]), "stop")
