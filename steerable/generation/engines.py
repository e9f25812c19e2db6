"""The one place an online method, an evaluation or the CLI gets its sampler: `make_sampler`, typed as
`Sampler`, built from the `generation.*` config. Engines differ in speed, never in what they return."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers import PreTrainedTokenizerBase

from steerable.config.generation import GenerationConfig
from steerable.generation.base import Sampler
from steerable.generation.hf import HFSampler


def make_sampler(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    end_of_turn: str | None = None,
    config: GenerationConfig | None = None,
) -> Sampler:
    """A sampler over the current weights of `model` (a vLLM engine is synced to them on each call)."""
    config = config or GenerationConfig()
    if config.engine == "vllm":
        from steerable.generation.vllm import VLLMSampler

        return VLLMSampler(model, tokenizer, end_of_turn, config)
    return HFSampler(
        model,
        tokenizer,
        end_of_turn,
        merge_lora=config.merge_lora,
        share_prompt_cache=config.share_prompt_cache,
    )


@dataclass(frozen=True)
class Engine:
    """A sampler recipe for any network a stage or an evaluation generates with: the configured engine and
    the chat format's end-of-turn token (`model.end_of_turn`)."""

    end_of_turn: str | None = None
    config: GenerationConfig | None = None

    def sampler(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> Sampler:
        return make_sampler(model, tokenizer, self.end_of_turn, self.config)
