"""The `generation.*` keys: which engine samples for online methods, evaluation and `steerable-generate`."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from steerable.config.base import ConfigError, at_least, choice_enum

# hf: transformers `generate` (always available) | vllm: vLLM in this process (pip install -e ".[vllm]")
Engine = choice_enum("Engine", ["hf", "vllm"])


INSTALL_HINT = (
    "generation.engine=vllm needs vLLM, which is not installed here: "
    'pip install -e ".[vllm]" on a GPU machine, or the CPU recipe in docs/engines.md'
)


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


@dataclass
class GenerationConfig:
    """Engine options. Both engines honour the same `Sampler` contract, so a method cannot tell them apart."""

    engine: Engine = Engine["hf"]
    # hf: fold a single active LoRA adapter into the base weights while sampling, restored bit for bit after
    # (skipped where adapters are mixed per example: CLP, Rewarded Soups, PCM)
    merge_lora: bool = True
    # hf: prefill each prompt once and copy its KV cache to its n samples (instead of n prefills)
    share_prompt_cache: bool = True
    # vllm: fraction of GPU memory vLLM may take beside the training model (colocated, as TRL's colocate mode)
    gpu_memory_utilization: float = 0.3
    cpu_kv_cache_gb: int = 2  # vllm on CPU: KV-cache space (VLLM_CPU_KVCACHE_SPACE)
    enforce_eager: bool | None = (
        None  # vllm: null = eager on CPU (compiling takes minutes there), graphs on GPU
    )
    max_model_len: int = 2048  # vllm: longest prompt + reply it plans memory for
    # vllm: true = LoRA merged into the engine's weights after each update (plain kernels); false = served as
    # a LoRA adapter version; null = merged on CPU (vLLM's CPU LoRA kernels are plain torch: 4x slower here)
    vllm_merge_lora: bool | None = None

    def __post_init__(self) -> None:
        if self.engine == "vllm" and not vllm_installed():
            raise ConfigError(INSTALL_HINT)  # at start-up, before a model is loaded
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(
                f"generation.gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        at_least("generation.cpu_kv_cache_gb", self.cpu_kv_cache_gb, 1)
        at_least("generation.max_model_len", self.max_model_len, 16)
