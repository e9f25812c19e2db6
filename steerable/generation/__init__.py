"""Batched sampling for online methods and the CLI, behind a backend-neutral ``Sampler`` interface."""

from steerable.generation.base import (
    Completion,
    FinishReason,
    GenerationSettings,
    Prompt,
    Sampler,
    settings_from,
)
from steerable.generation.engines import Engine, make_sampler
from steerable.generation.hf import HFSampler, render_prompt
from steerable.generation.logprobs import pack_completions, sequence_logprobs, token_logprobs
from steerable.generation.stops import Cut, cut_response

__all__ = [
    "Completion",
    "Cut",
    "Engine",
    "FinishReason",
    "GenerationSettings",
    "HFSampler",
    "Prompt",
    "Sampler",
    "cut_response",
    "make_sampler",
    "pack_completions",
    "render_prompt",
    "sequence_logprobs",
    "settings_from",
    "token_logprobs",
]
