"""The prompts CLP, Rewarded Soups and RL train and evaluate on, and their sampling settings."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from steerable.config.schema import DataConfig
from steerable.data.prompts import ALL, HeldOut, prompt_sets
from steerable.data.records import Messages
from steerable.generation import GenerationSettings, settings_from
from steerable.methods.clp.config import PolicyGradientConfig


def prompt_split(
    m: PolicyGradientConfig, data: DataConfig, tokenizer: PreTrainedTokenizerBase
) -> tuple[list[Messages], list[Messages]]:
    """Every fitting training prompt; the held-out split, else the training prompts, for evaluation."""
    budget = data.max_length - m.sampling.max_new_tokens
    return prompt_sets(data, tokenizer, budget, held_out=HeldOut(fallback=ALL), required=True)


def sampling(m: PolicyGradientConfig, n: int, seed: int | None = None) -> GenerationSettings:
    """Training samples: `method.sampling`, n replies per prompt, `generation_batch_size` rows per call."""
    return settings_from(
        m.sampling, num_return_sequences=n, batch_size=max(1, m.generation_batch_size // n), seed=seed
    )
