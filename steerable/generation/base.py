"""Backend-neutral types: what a sampler is asked for and what it hands back.

Online methods (best-of-n, RL, PCM) and the CLI only see these, so a vLLM engine can replace the
Hugging Face one without touching them.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import torch

from steerable.config.base import ConfigError
from steerable.config.sampling import SAMPLING_KEYS, SamplingConfig

log = logging.getLogger(__name__)

# A prompt is either text used verbatim or a chat (list of {"role", "content"} messages) that the
# sampler renders with the tokenizer's chat template.
Prompt: TypeAlias = str | list[dict[str, Any]]
FinishReason: TypeAlias = Literal["eos", "stop", "length"]


@dataclass
class GenerationSettings(SamplingConfig):
    """One request to an engine: a config's `sampling` (the decoding keys and their rules) plus what the
    caller decides at run time (replies per prompt, batch size, seed)."""

    num_return_sequences: int = 1
    batch_size: int = 8  # prompts per forward batch; each brings num_return_sequences rows
    seed: int | None = None  # None = draw from the global RNG
    # HF engine: keep each token's output-layer input (Completion.hidden), for log-probs without a second
    # pass through the layers below it (CLP logit, `policy_and_reference_logprobs`); other engines ignore it
    keep_hidden: bool = False

    def __post_init__(self) -> None:
        self.check()
        if self.num_return_sequences < 1 or self.batch_size < 1:
            raise ConfigError("num_return_sequences and batch_size must be at least 1")


def settings_from(sampling: SamplingConfig, **runtime: Any) -> GenerationSettings:
    """The one way a config becomes generation settings: its `sampling` block, with what only the caller knows
    (`num_return_sequences`, `batch_size`, `seed`; a method's own `stop` strings) passed by name in `runtime`,
    which also wins over `sampling`."""
    chosen = {key: getattr(sampling, key) for key in SAMPLING_KEYS}
    chosen["stop"] = list(chosen["stop"] or [])
    return GenerationSettings(**{**chosen, **runtime})


def fit_to_context(encoded: list[list[int]], max_new_tokens: int, model: Any) -> list[list[int]]:
    """Prompts cut from the left so prompt + reply fits the model's positions (`max_position_embeddings`):
    the end of a prompt (the request, the open assistant turn) is what the reply follows. Past its
    positions a model's output is undefined; this keeps every engine inside them and says how often."""
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not positions:
        return encoded
    room = max(1, int(positions) - max_new_tokens)
    cut = sum(len(ids) > room for ids in encoded)
    if cut:
        log.warning(
            "%d of %d prompts are longer than the model's %d positions minus max_new_tokens=%d: "
            "kept their last %d tokens",
            cut,
            len(encoded),
            positions,
            max_new_tokens,
            room,
        )
    return [ids[-room:] if len(ids) > room else ids for ids in encoded]


@dataclass
class Completion:
    """One sampled response.

    Invariant: ``text == decode(token_ids, skip_special_tokens=True)``, so rewards scored on ``text``
    and log-probs summed over ``token_ids`` describe the same response.
    """

    prompt_index: int  # index into the prompts passed to generate
    text: str
    token_ids: list[int]  # kept response tokens; ends with the end-of-turn id when finish_reason == "eos"
    logprobs: torch.Tensor  # [len(token_ids)] float32 log-softmax of the raw (untempered) logits
    finish_reason: FinishReason
    prompt_token_ids: list[int] = field(default_factory=list)  # the prompt exactly as the model saw it
    # Mixture decoding only: [len(token_ids), n] log-prob of each sampled token under each expert (PCM's cache)
    expert_logprobs: torch.Tensor | None = None
    # `keep_hidden` only: [len(token_ids), hidden size], the output layer's input that gave each token's logits
    hidden: torch.Tensor | None = None


class Sampler(ABC):
    """A generation engine; implementations differ in backend, never in the result contract."""

    @abstractmethod
    def generate(
        self, prompts: Sequence[Prompt], settings: GenerationSettings, row_context: Any = None
    ) -> list[Completion]:
        """Return ``num_return_sequences`` completions per prompt, grouped by prompt in input order.

        `row_context(prompt_indices, n)`, where given, wraps each forward batch so per-row conditioning
        (CLP's weightings over mixed adapters) follows the rows; an engine that cannot honour it raises."""
