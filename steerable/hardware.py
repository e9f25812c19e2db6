"""Choose the numeric precision from the machine a run lands on, and say why.

bf16 autocast only pays where the device computes bf16 natively. On a CPU without AVX512_BF16 or AMX (plain
AVX2), every bf16 matmul is emulated and runs 25-39x slower than fp32, so `hardware.precision=auto` (the
default) picks bf16-mixed only where it is native and 32-true everywhere else. The choice and its reason are
logged once per process and written into the run folder.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from steerable.allocator import keep_freed_memory
from steerable.config.schema import DEEPSPEED_NEEDS_GPU, Accelerator, ConfigError, HardwareConfig, Precision

log = logging.getLogger(__name__)

_warned_slow_bf16 = False


@dataclass(frozen=True)
class PrecisionChoice:
    requested: str
    precision: str
    accelerator: str
    reason: str
    allocator: str = "unchanged"  # what steerable/allocator.py did for this process

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_capability() -> str:
    return str(torch.backends.cpu.get_cpu_capability())


def cpu_has_native_bf16() -> bool:
    """AVX512_BF16 or AMX tiles, and torch dispatching AVX512 kernels (ATEN_CPU_CAPABILITY=avx2 turns them
    off, and with them fast bf16): the conditions under which bf16 matmuls beat fp32 on a CPU."""
    features = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return bool(features) and cpu_capability().startswith("AVX512")


def gpu_available() -> bool:
    return torch.cuda.is_available()


def gpu_has_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolved_accelerator(hardware: HardwareConfig) -> str:
    value = hardware.accelerator.value
    if value == "auto":
        return "gpu" if gpu_available() else "cpu"
    return value


def choose_precision(hardware: HardwareConfig) -> PrecisionChoice:
    """The precision this machine should run `hardware` at, with the reason in words."""
    requested = hardware.precision.value
    accelerator = resolved_accelerator(hardware)
    if accelerator == "cpu":
        native = cpu_has_native_bf16()
        features = f"CPU capability {cpu_capability()}, native bf16 {'yes' if native else 'no'}"
        if requested == "auto":
            precision = "bf16-mixed" if native else "32-true"
            why = "bf16 units in use" if native else "bf16 would be emulated, 25-39x slower than fp32"
            return PrecisionChoice(requested, precision, accelerator, f"auto on CPU ({features}): {why}")
        if requested.startswith("bf16") and not native:
            _warn_slow_bf16(requested, features)
        return PrecisionChoice(requested, requested, accelerator, f"requested ({features})")
    if requested == "auto":
        bf16 = gpu_has_bf16()
        precision = "bf16-mixed" if bf16 else "32-true"
        name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no visible GPU"
        why = "supports bf16" if bf16 else "no bf16 support: fp32 (set hardware.precision=16-mixed for fp16)"
        return PrecisionChoice(requested, precision, accelerator, f"auto on GPU ({name}): {why}")
    return PrecisionChoice(requested, requested, accelerator, "requested")


def _warn_slow_bf16(requested: str, features: str) -> None:
    global _warned_slow_bf16
    if not _warned_slow_bf16:
        log.warning(
            "hardware.precision=%s on a CPU without native bf16 (%s): every bf16 matmul is emulated and "
            "runs 25-39x slower than fp32; hardware.precision=auto picks 32-true here",
            requested,
            features,
        )
        _warned_slow_bf16 = True


def resolve_hardware(hardware: HardwareConfig) -> tuple[HardwareConfig, PrecisionChoice]:
    """`hardware` with `auto` precision and accelerator replaced by what this machine gets."""
    if hardware.accelerator == "gpu" and not gpu_available():
        strategy = f", strategy {hardware.strategy.value}" if hardware.strategy.value != "auto" else ""
        raise ConfigError(
            f"hardware={hardware.name} needs a CUDA GPU (hardware.accelerator=gpu{strategy}) and this machine "
            f"has none; use hardware=cpu{' or add hardware.accelerator=cpu' if strategy else ''}"
        )
    choice = choose_precision(hardware)
    if hardware.strategy.value.startswith("deepspeed") and choice.accelerator == "cpu":
        raise ConfigError(DEEPSPEED_NEEDS_GPU.format(strategy=hardware.strategy.value))
    resolved = replace(
        hardware, accelerator=Accelerator[choice.accelerator], precision=Precision[choice.precision]
    )
    return resolved, choice


def keep_cpu_memory(hardware: HardwareConfig, choice: PrecisionChoice) -> PrecisionChoice:
    """On a CPU run with `hardware.keep_freed_memory`, make malloc reuse freed memory (steerable/allocator.py);
    the choice with what was done."""
    if choice.accelerator != "cpu":
        return choice
    if not hardware.keep_freed_memory:
        return replace(choice, allocator="unchanged (hardware.keep_freed_memory=false)")
    return replace(choice, allocator=keep_freed_memory())


def effective_precision(hardware: HardwareConfig) -> str:
    """The concrete Lightning precision string (idempotent on an already resolved config)."""
    if hardware.precision.value != "auto":
        return hardware.precision.value
    return choose_precision(hardware).precision


def uses_bf16(hardware: HardwareConfig) -> bool:
    return effective_precision(hardware).startswith("bf16")


def inference_autocast(hardware: HardwareConfig) -> AbstractContextManager:
    """bf16 autocast for generation and scoring where the run's precision is bf16, else nothing."""
    if not uses_bf16(hardware):
        return nullcontext()
    device = "cuda" if resolved_accelerator(hardware) == "gpu" and gpu_available() else "cpu"
    return torch.autocast(device, dtype=torch.bfloat16)
