"""Two CPU processes (gloo) on the tiny model: DDP shards and equals one process at the same global batch,
FSDP2 writes complete checkpoints that reload exactly, resumes equal uninterrupted runs, online methods
sample different prompts per rank. Each run goes through tests/dist_worker.py, because Lightning starts the
second rank by re-running the first one's command line."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.distributed

WORKER = Path(__file__).with_name("dist_worker.py")
TINY = [
    "model=tiny",
    "data=demo",
    "logger=csv",
    "data.max_records=48",
    "report.num_samples=1",
    "report.sampling.max_new_tokens=4",
    "hardware.precision=32-true",
    "hardware.torch_threads=1",
    "model.lora.dropout=0",
    "method.lr=1e-2",
]
DDP = ["hardware=ddp", "hardware.accelerator=cpu", "hardware.devices=2"]
FSDP = ["hardware=fsdp", "hardware.accelerator=cpu", "hardware.devices=2"]
ONE = ["hardware=cpu"]


def launch(run_dir: Path, *overrides: str, crash_at: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, str(WORKER), str(run_dir), str(crash_at), *TINY, *overrides]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    if crash_at == 0 and done.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    return done


def metric(run_dir: Path, key: str) -> dict[int, float]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return {int(r["step"]): float(r[key]) for r in csv.DictReader(handle) if r.get(key)}


def seen(run_dir: Path, rank: int) -> list[dict]:
    path = run_dir / f"seen-rank{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_same_curve(a: dict[int, float], b: dict[int, float], tolerance: float = 1e-5) -> float:
    assert a.keys() == b.keys() and a, (a, b)
    worst = max(abs(a[s] - b[s]) for s in a)
    assert worst <= tolerance * max(1.0, max(abs(v) for v in a.values())), (a, b)
    return worst


def test_ddp_shards_rows_and_equals_one_process_at_the_same_global_batch(tmp_path) -> None:
    steps = ["trainer.max_steps=4", "trainer.val_check_interval=4", "trainer.checkpoint_every_n_steps=4"]
    ddp = tmp_path / "ddp"
    launch(ddp, *DDP, *steps, "method.batch_size=2")
    single = tmp_path / "single"
    launch(single, *ONE, *steps, "method.batch_size=4")
    accumulated = tmp_path / "accumulated"
    launch(accumulated, *ONE, *steps, "method.batch_size=2", "trainer.accumulate_grad_batches=2")

    rank0, rank1 = seen(ddp, 0), seen(ddp, 1)
    for a, b, full in zip(rank0, rank1, seen(single, 0), strict=True):
        assert not set(a["rows"]) & set(b["rows"])  # disjoint shards
        assert set(a["rows"]) | set(b["rows"]) == set(full["rows"])  # together: the global batch
    losses = metric(single, "train/loss")
    print("max |DDP - 1 process| train loss:", assert_same_curve(metric(ddp, "train/loss"), losses))
    print("max |accumulate - 1 process|:", assert_same_curve(metric(accumulated, "train/loss"), losses))
    assert_same_curve(metric(ddp, "val/loss"), metric(single, "val/loss"))
    ddp_adapter = load_file(ddp / "checkpoints/final/adapter_model.safetensors")
    single_adapter = load_file(single / "checkpoints/final/adapter_model.safetensors")
    assert ddp_adapter.keys() == single_adapter.keys()
    for key, value in single_adapter.items():
        torch.testing.assert_close(
            ddp_adapter[key], value, rtol=1e-4, atol=2e-5
        )  # Adam amplifies ~1e-7 noise


UNINTERRUPTED = ["trainer.max_steps=6", "trainer.checkpoint_every_n_steps=2", "method.batch_size=2"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, Path]:
    """One uninterrupted 6-step run per strategy, shared: the resume tests' reference and the FSDP checkpoint
    test's pair (each launch starts two processes, the suite's most expensive step)."""
    root = tmp_path_factory.mktemp("uninterrupted")
    runs = {"ddp": root / "ddp", "fsdp": root / "fsdp"}
    for strategy, hardware in (("ddp", DDP), ("fsdp", FSDP)):
        launch(runs[strategy], *hardware, *UNINTERRUPTED)
    return runs


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_killed_multi_process_run_resumes_to_the_uninterrupted_run(tmp_path, strategy, uninterrupted) -> None:
    hardware = DDP if strategy == "ddp" else FSDP
    reference = uninterrupted[strategy]
    interrupted = tmp_path / "interrupted"
    crashed = launch(interrupted, *hardware, *UNINTERRUPTED, crash_at=3)
    assert crashed.returncode != 0 and not (interrupted / "checkpoints/final").exists()
    launch(interrupted, *hardware, *UNINTERRUPTED, "resume=auto")
    assert_same_curve(metric(interrupted, "train/loss"), metric(reference, "train/loss"), 1e-6)
    a = load_file(reference / "checkpoints/final/adapter_model.safetensors")
    b = load_file(interrupted / "checkpoints/final/adapter_model.safetensors")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-7)


def test_fsdp_checkpoint_and_adapter_are_complete_and_reload_exactly(uninterrupted) -> None:
    from steerable.backbone import load_backbone
    from steerable.methods.base import run_model_config
    from steerable.policies.plain import load_run_model

    fsdp, ddp = uninterrupted["fsdp"], uninterrupted["ddp"]
    print(
        "max |FSDP - DDP| train loss:",
        assert_same_curve(metric(fsdp, "train/loss"), metric(ddp, "train/loss")),
    )

    checkpoint = torch.load(fsdp / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    adapter = load_file(fsdp / "checkpoints/final/adapter_model.safetensors")
    base, _ = load_backbone(run_model_config(fsdp))
    lora = {n for n, p in base.named_parameters() if p.requires_grad}
    print(
        f"FSDP checkpoint tensors {len(checkpoint['state_dict'])}, adapter tensors {len(adapter)}, LoRA {len(lora)}"
    )
    assert len(checkpoint["state_dict"]) == len(lora) == len(adapter) > 0
    initial = {n: p.detach().clone() for n, p in base.named_parameters()}
    assert {name.removeprefix("model.") for name in checkpoint["state_dict"]} == lora
    assert any(
        not torch.equal(value, initial[name.removeprefix("model.")])
        for name, value in checkpoint["state_dict"].items()
    )  # trained, not the initial weights

    policy, _ = load_run_model(fsdp)
    restored = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    assert not base.load_state_dict(restored, strict=False).unexpected_keys
    ids = torch.arange(3, 40).unsqueeze(0)
    policy.eval(), base.eval()
    with torch.no_grad():
        torch.testing.assert_close(policy(input_ids=ids).logits, base(input_ids=ids).logits, rtol=0, atol=0)


def test_online_method_under_ddp_samples_different_prompts_and_reduces_metrics(tmp_path) -> None:
    run_dir = tmp_path / "superhf"
    launch(
        run_dir,
        *DDP,
        "method=superhf",
        "reward=[verbosity]",
        "method.reward=verbosity",
        "debug=fast",
        "trainer.max_steps=2",
    )
    rank0, rank1 = seen(run_dir, 0), seen(run_dir, 1)
    assert len(rank0) == len(rank1) > 0
    for a, b in zip(rank0, rank1, strict=True):
        assert not set(a["rows"]) & set(b["rows"])
    logged = metric(run_dir, "train/reward_all")
    for a, b in zip(rank0, rank1, strict=True):
        step = a["step"] - 1  # logged inside the step, recorded after it
        expected = (a["metrics"]["train/reward_all"] + b["metrics"]["train/reward_all"]) / 2
        assert logged[step] == pytest.approx(expected, rel=1e-5)
