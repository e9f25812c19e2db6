"""Precision follows the machine: auto picks bf16 only where it is native, says why, and warns about slow bf16."""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import steerable.hardware as hw
from steerable.config.schema import Accelerator, ConfigError, HardwareConfig, Precision, Strategy
from tests.conftest import compose_config

EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml"))


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(hw, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(hw, "cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(hw, "_warned_slow_bf16", False)


@pytest.fixture
def cpu_with_bf16(monkeypatch):
    monkeypatch.setattr(hw, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(hw, "cpu_capability", lambda: "AVX512")


def test_auto_is_fp32_on_a_cpu_without_native_bf16(cpu_without_bf16) -> None:
    hardware, choice = hw.resolve_hardware(HardwareConfig(name="cpu"))
    assert hardware.precision == Precision["32-true"] and choice.requested == "auto"
    assert "AVX2" in choice.reason and "emulated" in choice.reason


def test_auto_is_bf16_on_a_cpu_with_bf16_units(cpu_with_bf16) -> None:
    hardware, choice = hw.resolve_hardware(HardwareConfig(name="cpu"))
    assert hardware.precision == Precision["bf16-mixed"]
    assert "native bf16 yes" in choice.reason


def test_explicit_bf16_on_a_slow_cpu_is_kept_and_warned_once(cpu_without_bf16, caplog) -> None:
    requested = HardwareConfig(name="cpu", precision=Precision["bf16-mixed"])
    with caplog.at_level(logging.WARNING, logger="steerable.hardware"):
        for _ in range(3):
            hardware, _ = hw.resolve_hardware(requested)
    assert hardware.precision == Precision["bf16-mixed"]
    warnings = [r for r in caplog.records if "25-39x slower" in r.getMessage()]
    assert len(warnings) == 1 and "hardware.precision=bf16-mixed" in warnings[0].getMessage()


def test_explicit_fp32_is_never_changed(cpu_with_bf16) -> None:
    hardware, _ = hw.resolve_hardware(HardwareConfig(name="cpu", precision=Precision["32-true"]))
    assert hardware.precision == Precision["32-true"]


def test_deepspeed_on_a_machine_without_gpu_names_the_alternatives(monkeypatch) -> None:
    monkeypatch.setattr(hw, "gpu_available", lambda: False)
    hardware = HardwareConfig(
        name="deepspeed", accelerator=Accelerator["auto"], strategy=Strategy["deepspeed_stage_2"]
    )
    with pytest.raises(ConfigError, match=r"only on CUDA GPUs.*hardware=ddp or hardware=fsdp"):
        hw.resolve_hardware(hardware)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_no_experiment_hard_codes_a_precision(experiment: str) -> None:
    cfg = compose_config("train", [f"experiment={experiment}"])
    assert cfg.hardware.precision == "auto", f"experiments/{experiment}.yaml sets hardware.precision"


def test_the_run_records_the_precision_it_chose(tmp_path, tiny_train_cfg, cpu_without_bf16) -> None:
    from steerable.cli.train import run

    cfg = tiny_train_cfg(tmp_path, "trainer.max_steps=1", "method.stages=[train]")
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    run(cfg, run_dir)
    chosen = json.loads((run_dir / "hardware.json").read_text())
    assert chosen["precision"] == "32-true" and chosen["requested"] == "auto" and "AVX2" in chosen["reason"]
    if platform.libc_ver()[0] == "glibc":
        assert chosen["allocator"] == "glibc malloc keeps freed memory (mmap off, trim off)"
    summary = json.loads((run_dir / ".steerable" / "complete").read_text())
    assert summary["hardware"] == chosen


def test_keep_cpu_memory_is_off_on_request_and_on_gpus() -> None:
    choice = hw.PrecisionChoice("auto", "32-true", "cpu", "test")
    off = hw.keep_cpu_memory(HardwareConfig(name="cpu", keep_freed_memory=False), choice)
    assert off.allocator == "unchanged (hardware.keep_freed_memory=false)"
    gpu = hw.PrecisionChoice("auto", "bf16-mixed", "gpu", "test")
    assert hw.keep_cpu_memory(HardwareConfig(name="gpu"), gpu).allocator == "unchanged"


# Minor page faults of allocating, filling and freeing 256 MiB, then 128 and 64 MiB (blocks that fit in the
# freed one), counted after the first.
REFAULTS = """
import resource, sys, torch
from steerable.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    keep_freed_memory()
counts = []
for mebifloats in (64, 32, 16):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(mebifloats * 2**20)
    del x
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(counts[1:]))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_kept_memory_is_reused_without_faulting_it_in_again() -> None:
    """Under glibc's defaults a freed 256 MiB block goes back to the kernel, so the next blocks fault in page by
    page (49k pages); after keep_freed_memory they reuse it."""
    faults = {}
    for mode in ("default", "keep"):
        out = subprocess.run(
            [sys.executable, "-c", REFAULTS, mode], capture_output=True, text=True, check=True
        )
        faults[mode] = int(out.stdout.strip())
    assert faults["default"] > 40_000
    assert faults["keep"] < 2_000
