"""The `model.*` keys: which backbone to load, its dtype and its LoRA adapters."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from steerable.config.base import ConfigError, at_least, choice_enum

# hub: hub id or local folder; gguf: a GGUF file (the bundled SmolLM2 by default), converted once and cached;
# tiny: random weights built from `model.tiny` with the project's byte-level tokenizer (tests, smoke runs).
ModelSource = choice_enum("ModelSource", ["hub", "gguf", "tiny"])
DType = choice_enum("DType", ["float32", "bfloat16", "float16"])
# Which biases LoRA trains (PEFT's `bias`): none | all | lora_only.
LoraBias = choice_enum("LoraBias", ["none", "all", "lora_only"])


@dataclass
class LoraConfig:
    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    bias: LoraBias = LoraBias["none"]

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ConfigError(f"model.lora.r must be positive, got {self.r}")
        at_least("model.lora.alpha", self.alpha, 0, strictly=True)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.lora.dropout must be in [0, 1), got {self.dropout}")
        if self.enabled and not self.target_modules:
            raise ConfigError("model.lora.target_modules is empty while model.lora.enabled=true")


@dataclass
class TinyModelConfig:
    """Shape of a random-weight Llama used by tests and smoke runs."""

    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 128
    max_position_embeddings: int = 1024
    tie_word_embeddings: bool = True
    # Larger than HF's 0.02 so the frozen output layer can express peaked distributions: with 0.02 a
    # LoRA-only model cannot move the logits enough to learn anything beyond a near-uniform distribution.
    initializer_range: float = 0.1
    seed: int = 0  # weights depend only on this, so a saved adapter always meets the same base


@dataclass
class ModelConfig:
    name: str = MISSING
    source: ModelSource = ModelSource["hub"]
    name_or_path: str | None = None
    gguf_file: str | None = None  # file name (or path) of the GGUF weights; null = the bundled SmolLM2 file
    revision: str | None = None
    dtype: DType = DType["float32"]  # weights dtype on load
    trust_remote_code: bool = False
    attn_implementation: str | None = None
    gradient_checkpointing: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    end_of_turn: str | None = None  # the token that closes an assistant turn; null = tokenizer.eos_token
    # LoRA adapters folded into the weights on load, in order: a warm start (an SFT run, its checkpoints/final,
    # or an adapter folder). The result is the base every stage and the run's policy start from.
    merge_adapters: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.source == "hub" and not self.name_or_path:
            raise ConfigError(
                "model.name_or_path is required when model.source=hub (a hub id or a local folder)"
            )
