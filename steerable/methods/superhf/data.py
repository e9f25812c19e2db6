"""The prompts SuperHF trains and evaluates on, and its sampling settings."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from steerable.config.schema import DataConfig
from steerable.data.prompts import HeldOut, SystemPrompt, prompt_sets
from steerable.data.records import Messages
from steerable.generation import GenerationSettings, settings_from
from steerable.methods.superhf.config import SuperHFConfig


def prompt_split(
    m: SuperHFConfig, data: DataConfig, tokenizer: PreTrainedTokenizerBase
) -> tuple[list[Messages], list[Messages]]:
    """SuperHF's prompts (behind its system prompt, optionally the first turn only): the first num_prompts
    for training; the held-out split, else the last eval_prompts training prompts, for evaluation."""
    return prompt_sets(
        data,
        tokenizer,
        data.max_length - m.sampling.max_new_tokens,
        transform=SystemPrompt(m.system_prompt, m.first_turn_only),
        limit=m.num_prompts,
        held_out=HeldOut(fallback=m.eval_prompts),
        required=True,
    )


def sampling(m: SuperHFConfig, n: int, seed: int | None) -> GenerationSettings:
    """n samples per prompt from `method.sampling`, `generation_batch_size` rows per call."""
    return settings_from(
        m.sampling, num_return_sequences=n, batch_size=max(1, m.generation_batch_size // n), seed=seed
    )
