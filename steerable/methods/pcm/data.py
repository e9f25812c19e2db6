"""What PCM trains on: each expert's share of the data (the records whose label sits at its side's end), and the
prompts with room left for the reply and the preference line."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from steerable.data.prompts import prompt_sets
from steerable.data.records import Conversation, Messages
from steerable.methods.base import RunContext
from steerable.methods.pcm.config import PCMConfig

PREFERENCE_ROOM = 16  # prompt tokens kept free for the preference description


def side_data(
    conversations: list[Conversation], dimension: str, high: bool, m: PCMConfig
) -> list[Conversation]:
    def keep(c: Conversation) -> bool:
        turn = c.last_assistant
        value = turn.attributes.get(dimension) if turn is not None else None
        if value is None:
            return False
        return value >= m.high_side_min if high else value <= m.low_side_max

    return [c for c in conversations if keep(c)]


def pcm_prompts(ctx: RunContext, tokenizer: PreTrainedTokenizerBase) -> tuple[list[Messages], list[Messages]]:
    """Training and held-out prompts with room for the reply and the preference line (no fallback)."""
    cfg = ctx.cfg
    return prompt_sets(
        cfg.data, tokenizer, cfg.data.max_length - cfg.method.sampling.max_new_tokens - PREFERENCE_ROOM
    )
