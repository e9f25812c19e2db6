"""A reward from any Hugging Face ``AutoModelForSequenceClassification`` checkpoint.

Covers off-the-shelf reward models and attribute classifiers (e.g. DeBERTa RMs that take a text pair,
decoder RMs that read a chat transcript) with one wrapper. Decoder classifiers pool the logits of the
last non-pad token; we pad on the right and make sure ``pad_token_id`` is set in the config (a wrong
or missing one makes pooling read a pad position), so a response scores the same alone or in a padded
batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Literal

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from steerable.rewards.base import RewardSource

__all__ = ["HFSequenceClassifierReward"]

PromptFormat = Literal["pair", "concat", "chat"]
Activation = Literal["none", "sigmoid", "softmax"]


class HFSequenceClassifierReward(RewardSource):
    """Scores ``(prompt, response)`` with a sequence classifier; one output per selected label.

    Args:
        name_or_path: checkpoint directory or hub id (loaded with safetensors, no remote code).
        label_index: which logit column(s) to return; ``None`` returns all labels.
        batch_size: texts per forward pass; results do not depend on it.
        device: torch device for the model (default CPU).
        max_length: truncation length in tokens (``None``: the tokenizer's ``model_max_length``).
        prompt_format: ``"pair"`` encodes ``(prompt, response)`` as a tokenizer text pair (cross
            encoders); ``"concat"`` scores ``prompt + separator + response``; ``"chat"`` applies the
            tokenizer's chat template to a user/assistant exchange (chat-tuned reward models).
        separator: joiner for ``"concat"``.
        activation: ``"none"`` returns raw logits (reward models), ``"sigmoid"``/``"softmax"``
            probabilities (classifiers); softmax is taken over all labels before selection.
        names: output names; default the config's ``id2label`` (or ``"score"`` for a single logit).
        dtype: model dtype (default float32).
        tokenizer: tokenizer object or path, when it is not stored with the model.
    """

    def __init__(
        self,
        name_or_path: str,
        label_index: int | Sequence[int] | None = None,
        batch_size: int = 8,
        device: str | torch.device = "cpu",
        max_length: int | None = 512,
        prompt_format: PromptFormat = "concat",
        separator: str = "",
        activation: Activation = "none",
        names: Sequence[str] | None = None,
        dtype: torch.dtype | str | None = None,
        tokenizer: PreTrainedTokenizerBase | str | None = None,
    ) -> None:
        if prompt_format not in ("pair", "concat", "chat"):
            raise ValueError(f"prompt_format must be 'pair', 'concat' or 'chat', got {prompt_format!r}")
        if activation not in ("none", "sigmoid", "softmax"):
            raise ValueError(f"activation must be 'none', 'sigmoid' or 'softmax', got {activation!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_length = max_length
        self.prompt_format = prompt_format
        self.separator = separator
        self.activation = activation

        if tokenizer is None or isinstance(tokenizer, str):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer or name_or_path, trust_remote_code=False)
        self.tokenizer = tokenizer
        self.model = AutoModelForSequenceClassification.from_pretrained(
            name_or_path, trust_remote_code=False, use_safetensors=True, dtype=dtype or torch.float32
        )
        self.model.to(self.device).eval()
        self._fix_padding()
        # token_type_ids only where the architecture takes them (BERT-likes yes, Llama no).
        forward_params = inspect.signature(self.model.forward).parameters
        self._input_names = {"input_ids", "attention_mask"} | (
            {"token_type_ids"} if "token_type_ids" in forward_params else set()
        )

        self.label_indices = self._selected_labels(label_index)
        self.names = self._output_names(names)

    def _selected_labels(self, label_index: int | Sequence[int] | None) -> list[int]:
        """The logits kept as outputs (all by default), as non-negative indices."""
        num_labels = int(self.model.config.num_labels)
        if label_index is None:
            indices = list(range(num_labels))
        elif isinstance(label_index, int):
            indices = [label_index]
        else:
            indices = [int(i) for i in label_index]
        bad = [i for i in indices if not -num_labels <= i < num_labels]
        if not indices or bad:
            raise ValueError(f"label_index {label_index} invalid for a model with {num_labels} labels")
        return [i % num_labels for i in indices]

    def _output_names(self, names: Sequence[str] | None) -> list[str]:
        """One name per kept logit: given, else the config's `id2label` ("score" for a single logit)."""
        if names is None:
            id2label = getattr(self.model.config, "id2label", None) or {}
            if int(self.model.config.num_labels) == 1:
                names = ["score"]
            else:
                names = [str(id2label.get(i, f"LABEL_{i}")) for i in self.label_indices]
        names = list(names)
        if len(names) != len(self.label_indices):
            raise ValueError(f"{len(names)} names given for {len(self.label_indices)} selected labels")
        return names

    def _fix_padding(self) -> None:
        """Right padding plus a pad id in the config: HF pools the rightmost non-pad token, and right
        padding keeps position ids identical to the unpadded sequence (left padding shifts them, which
        RoPE models tolerate but models with absolute position embeddings, e.g. GPT-2, do not)."""
        tok = self.tokenizer
        if tok.pad_token_id is None:
            if tok.eos_token_id is None:
                raise ValueError("tokenizer has neither a pad nor an eos token; cannot batch")
            tok.pad_token = tok.eos_token
        tok.padding_side = "right"
        config = self.model.config
        if config.pad_token_id is None:
            config.pad_token_id = tok.pad_token_id
        text_config = config.get_text_config()
        if text_config is not config and text_config.pad_token_id is None:
            text_config.pad_token_id = tok.pad_token_id
        if text_config.pad_token_id != tok.pad_token_id:
            raise ValueError(
                f"model pad_token_id {text_config.pad_token_id} != tokenizer pad_token_id {tok.pad_token_id}; "
                "last-token pooling would read the wrong position"
            )

    def _encode(self, prompts: list[str], responses: list[str]) -> dict[str, torch.Tensor]:
        kwargs: dict[str, Any] = {
            "padding": True,
            "truncation": self.max_length is not None,
            "max_length": self.max_length,
            "return_tensors": "pt",
        }
        if self.prompt_format == "pair":
            enc = self.tokenizer(prompts, responses, **kwargs)
        elif self.prompt_format == "concat":
            enc = self.tokenizer(
                [p + self.separator + r for p, r in zip(prompts, responses, strict=True)], **kwargs
            )
        else:
            texts = [
                self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": p}, {"role": "assistant", "content": r}], tokenize=False
                )
                for p, r in zip(prompts, responses, strict=True)
            ]
            # The template already holds any special tokens.
            enc = self.tokenizer(texts, add_special_tokens=False, **kwargs)
        if enc["input_ids"].shape[1] == 0 or (enc["attention_mask"].sum(dim=1) == 0).any():
            raise ValueError("a (prompt, response) pair encodes to no tokens; there is nothing to pool")
        return {k: v.to(self.device) for k, v in enc.items() if k in self._input_names}

    def _score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        chunks = []
        for start in range(0, len(prompts), self.batch_size):
            stop = start + self.batch_size
            logits = self.model(**self._encode(prompts[start:stop], responses[start:stop])).logits.float()
            if self.activation == "sigmoid":
                logits = torch.sigmoid(logits)
            elif self.activation == "softmax":
                logits = torch.softmax(logits, dim=-1)
            chunks.append(logits[:, self.label_indices].cpu())
        return torch.cat(chunks, dim=0)
