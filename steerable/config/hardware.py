"""The `hardware.*` keys: accelerator, devices, strategy and precision (`auto` is resolved per machine by
steerable/hardware.py)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from steerable.config.base import ConfigError, at_least, choice_enum

Accelerator = choice_enum("Accelerator", ["cpu", "gpu", "auto"])
# auto: bf16-mixed where the device computes bf16 natively, else 32-true (steerable/hardware.py).
Precision = choice_enum("Precision", ["auto", "32-true", "bf16-mixed", "bf16-true", "16-mixed"])
Strategy = choice_enum(
    "Strategy", ["auto", "ddp", "ddp_spawn", "fsdp", "deepspeed_stage_2", "deepspeed_stage_3"]
)


DEEPSPEED_NEEDS_GPU = (
    "hardware.strategy={strategy} runs only on CUDA GPUs (Lightning's DeepSpeed strategy refuses the CPU); "
    "on CPU use hardware=ddp or hardware=fsdp with hardware.accelerator=cpu"
)


@dataclass
class HardwareConfig:
    name: str = MISSING
    accelerator: Accelerator = Accelerator["cpu"]
    devices: int = 1
    num_nodes: int = 1
    strategy: Strategy = Strategy["auto"]
    precision: Precision = Precision["auto"]
    torch_threads: int | None = None
    # CPU runs on Linux: glibc malloc keeps freed memory for the next step instead of returning it to the
    # kernel, so a training step does not fault its activations in again page by page (steerable/allocator.py)
    keep_freed_memory: bool = True

    def __post_init__(self) -> None:
        if self.devices < 1 or self.num_nodes < 1:
            raise ConfigError("hardware.devices and hardware.num_nodes must be at least 1")
        at_least("hardware.torch_threads", self.torch_threads, 1)
        if self.accelerator == "cpu" and self.precision == "16-mixed":
            raise ConfigError("hardware.precision=16-mixed needs a GPU; use bf16-mixed on CPU")
        if self.strategy in ("deepspeed_stage_2", "deepspeed_stage_3") and self.accelerator == "cpu":
            raise ConfigError(DEEPSPEED_NEEDS_GPU.format(strategy=self.strategy.value))
