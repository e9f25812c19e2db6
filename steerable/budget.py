"""What a run spends: replies generated, tokens generated and tokens trained, counted where it happens (the
samplers and the training steps) and recorded per stage by the pipeline, so a benchmark can check that every
arm ran under the same budget instead of trusting each method's own bookkeeping.

One ledger per process: under data parallelism each rank counts its own share (rank 0's stage summary holds
rank 0's counts; multiply by the world size for the total)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Spend:
    samples_generated: int = 0
    tokens_generated: int = 0
    tokens_trained: int = 0

    def minus(self, earlier: Spend) -> Spend:
        return Spend(**{k: v - getattr(earlier, k) for k, v in asdict(self).items()})

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


_LEDGER = Spend()


def spent() -> Spend:
    """A copy of everything this process has spent so far (subtract an earlier copy for one stage's share)."""
    return Spend(**asdict(_LEDGER))


def record_generated(completions: Sequence[Any]) -> None:
    """Replies a sampler returned (each has `token_ids`)."""
    _LEDGER.samples_generated += len(completions)
    _LEDGER.tokens_generated += sum(len(c.token_ids) for c in completions)


def record_trained(tokens: Any) -> None:
    """Tokens that went through a training forward and backward (a count or a 0-d tensor)."""
    _LEDGER.tokens_trained += int(tokens)
