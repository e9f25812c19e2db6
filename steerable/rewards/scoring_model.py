"""A backbone with a linear head on one pooled hidden state: the Bradley–Terry reward model (K=1) and the
multi-attribute regression model (SteerLM's APM, K attributes) are both this.

The input is the conversation rendered with the chat template through the scored reply and its end-of-turn
token; the default pooling reads the hidden state of that last token, the position right after the response
(NeMo's APM reads `<extra_id_2>` there). `mean` pooling averages over real tokens only (padding excluded).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from steerable.backbone import load_backbone
from steerable.backbone.adapters import atomic_directory
from steerable.backbone.loading import untrusted_model_config
from steerable.config.schema import ModelConfig
from steerable.training.losses import causal_lm

HEAD_FILE = "head.safetensors"
META_FILE = "steerable.json"


@dataclass
class ScorerMeta:
    """What a scoring checkpoint needs to be used correctly: names, order and range travel with the weights."""

    kind: str  # reward_model | attribute_model
    names: list[str]
    pooling: str = "last"
    value_range: list[float] | None = None  # attribute models: the label scale, e.g. [0, 4]
    max_length: int = 1024
    model: dict = field(default_factory=dict)  # the ModelConfig the backbone was built from


class ScoringModel(torch.nn.Module):
    def __init__(self, backbone: torch.nn.Module, num_outputs: int, pooling: str = "last", bias: bool = True):
        super().__init__()
        if pooling not in ("last", "mean"):
            raise ValueError(f"pooling must be 'last' or 'mean', got {pooling!r}")
        self.backbone = backbone
        self.pooling = pooling
        hidden = causal_lm(backbone).config.hidden_size
        self.head = torch.nn.Linear(hidden, num_outputs, bias=bias)
        torch.nn.init.normal_(self.head.weight, std=1.0 / (hidden + 1) ** 0.5)
        if bias:
            torch.nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Scores [B, K] for right-padded inputs."""
        decoder = causal_lm(self.backbone).get_decoder()
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "last":
            last = attention_mask.sum(dim=1) - 1
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        else:
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
        return self.head(pooled.to(self.head.weight.dtype))


def render_scored(
    tokenizer: PreTrainedTokenizerBase, context: Sequence[dict], response: str, max_length: int
) -> list[int]:
    """Token ids of context + reply; too long inputs lose their oldest tokens (the scored end is kept)."""
    messages = [*context, {"role": "assistant", "content": response}]
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=False)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    eot = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    while len(ids) > 1 and ids[-1] != eot and eot in ids:  # drop the template's trailing newline after <eot>
        ids.pop()
    return ids[-max_length:]


def save_scorer(
    model: ScoringModel,
    tokenizer: PreTrainedTokenizerBase,
    meta: ScorerMeta,
    target: Path,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Adapter (or full backbone) + head as safetensors + metadata, written atomically.

    `state_dict` (keys `backbone.*`, `head.*`) replaces the live weights when those are sharded by FSDP."""
    state = state_dict if state_dict is not None else model.state_dict()
    backbone_state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    head_state = {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
    with atomic_directory(target) as tmp:
        model.backbone.save_pretrained(tmp, safe_serialization=True, state_dict=backbone_state)
        tokenizer.save_pretrained(tmp)
        save_file({k: v.detach().cpu().contiguous() for k, v in head_state.items()}, tmp / HEAD_FILE)
        (tmp / META_FILE).write_text(json.dumps(asdict(meta), indent=2, sort_keys=True))
    return target


def scorer_dir(path: str | Path) -> Path:
    """Accept a run folder or its checkpoints/final folder."""
    path = Path(path)
    for candidate in (path, path / "checkpoints" / "final"):
        if (candidate / HEAD_FILE).is_file() and (candidate / META_FILE).is_file():
            return candidate
    raise FileNotFoundError(
        f"{path} holds no reward or attribute model (expected {HEAD_FILE} and {META_FILE})"
    )


def load_scorer(path: str | Path) -> tuple[ScoringModel, PreTrainedTokenizerBase, ScorerMeta]:
    folder = scorer_dir(path)
    meta = ScorerMeta(**json.loads((folder / META_FILE).read_text()))
    model_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), meta.model))
    model_cfg = untrusted_model_config(model_cfg, folder / META_FILE)
    backbone, tokenizer = load_backbone(model_cfg, adapter_dir=folder)
    head_state = load_file(folder / HEAD_FILE)
    model = ScoringModel(backbone, len(meta.names), pooling=meta.pooling, bias="bias" in head_state)
    model.head.load_state_dict(head_state)
    return model.eval(), tokenizer, meta
