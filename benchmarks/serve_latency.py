"""Serve vs generate: one request's latency through `steerable-serve` (POST /generate on a real server process)
against the same request through `steerable-generate`'s code path (load_policy + policy.generate under the
machine's inference autocast, in this process), on the same run, controls and settings.

Both arms use the same engine, precision resolution (hardware=cpu, precision auto) and torch thread count; the
server loads the model once at start, so its time is one request's. Rounds alternate the arm order; the table
shows each arm's median and best, and the ratio serve/generate of the best rounds (target <= 1.2x; on a
shared machine contention only ever slows a round down, so the best round is the least disturbed) and of the
medians. Both arms must return the same text (greedy), or the script fails.

  python benchmarks/serve_latency.py --smoke                # the default tiny model, 8 new tokens, 2 rounds
  python benchmarks/serve_latency.py                        # a mid-size random model (hidden 256, 8 layers)
  python benchmarks/serve_latency.py --smollm2-shape        # random weights in SmolLM2-135M's shape
  python benchmarks/serve_latency.py --run outputs/quickstart/<timestamp>   # an existing run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# a random-weight model between the test model and SmolLM2 (fits a shared 2-core machine's patience)
MID_SHAPE = [
    "model.tiny.hidden_size=256",
    "model.tiny.num_hidden_layers=8",
    "model.tiny.intermediate_size=768",
    "model.tiny.initializer_range=0.02",
]
# SmolLM2-135M's shape (config.json of HuggingFaceTB/SmolLM2-135M-Instruct), random weights
SMOLLM2_SHAPE = [
    "model.tiny.hidden_size=576",
    "model.tiny.num_hidden_layers=30",
    "model.tiny.num_attention_heads=9",
    "model.tiny.num_key_value_heads=3",
    "model.tiny.intermediate_size=1536",
    "model.tiny.initializer_range=0.02",
]
TRAIN = [
    "model=tiny",
    "data=demo",
    "hardware=cpu",
    "logger=csv",
    "method=steerlm",
    "method.labels=human",
    "method.stages=[acsft]",
    "trainer.max_steps=1",
    "trainer.limit_val_batches=1",
    "data.max_records=16",
    "report.num_samples=1",
    "report.sampling.max_new_tokens=4",
]
PROMPT = "Give me three tips for sleeping well."
CONTROLS = {"attributes.verbosity": 4}


def env(threads: int, code: Path = ROOT) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": str(threads)}


def make_run(root: Path, shape: list[str], threads: int) -> Path:
    overrides = [*TRAIN, *shape, f"output_root={root}"]
    command = [sys.executable, "-m", "steerable.cli.train", *overrides]
    subprocess.run(command, check=True, env=env(threads), cwd=root, capture_output=True)
    (run,) = [p.parent.parent for p in root.rglob(".steerable/complete")]
    return run


def start_server(
    run: Path, threads: int, max_new_tokens: int, cwd: Path, code: Path
) -> tuple[subprocess.Popen, str]:
    command = [
        sys.executable,
        "-m",
        "steerable.cli.serve",
        f"run={run}",
        "port=0",
        f"sampling.max_new_tokens={max_new_tokens}",
        f"hardware.torch_threads={threads}",
    ]
    process = subprocess.Popen(
        command, env=env(threads, code), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    for line in process.stdout:
        if " at http://" in line:
            return process, line.rsplit(" at ", 1)[1].strip()
    raise SystemExit(f"steerable-serve did not start (exit {process.wait()})")


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url + "/generate", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=3600) as reply:
        return json.loads(reply.read())


def generate_arm(run: Path, threads: int, max_new_tokens: int):
    """steerable-generate's path (cli/generate.py): the policy, its settings, the machine's autocast."""
    from steerable.cli.common import set_threads
    from steerable.config.hardware import HardwareConfig
    from steerable.generation import GenerationSettings
    from steerable.hardware import inference_autocast, resolve_hardware
    from steerable.methods.registry import load_policy

    set_threads(threads)
    hardware, _ = resolve_hardware(HardwareConfig(name="cpu", torch_threads=threads))
    policy = load_policy(run)
    settings = GenerationSettings(max_new_tokens=max_new_tokens, seed=1234)
    messages = [{"role": "user", "content": PROMPT}]

    def once() -> str:
        with inference_autocast(hardware):
            (completion,) = policy.generate([messages], CONTROLS, settings)
        return completion.text

    return once


def timed(arm) -> tuple[float, str]:
    start = time.perf_counter()
    text = arm()
    return time.perf_counter() - start, text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny model, 8 new tokens, 2 rounds")
    parser.add_argument("--run", type=Path, help="an existing run folder (default: train a fresh one)")
    parser.add_argument("--smollm2-shape", action="store_true", help="train a SmolLM2-135M-shaped model")
    parser.add_argument("--keep-run", type=Path, help="train the fresh run under this folder and keep it")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--server-code",
        type=Path,
        default=ROOT,
        help="a checkout whose steerable-serve to time (before/after)",
    )
    args = parser.parse_args()
    max_new = args.max_new_tokens or (8 if args.smoke else 64)
    rounds = args.rounds or (2 if args.smoke else 4)
    with tempfile.TemporaryDirectory() as tmp:
        shape = [] if args.smoke else SMOLLM2_SHAPE if args.smollm2_shape else MID_SHAPE
        run = args.run or make_run(args.keep_run or Path(tmp), shape, args.threads)
        process, url = start_server(run, args.threads, max_new, Path(tmp), args.server_code)
        try:
            rows = measure(run, url, args.threads, max_new, rounds)
        finally:
            process.terminate()
            process.wait(timeout=30)
    report(rows, max_new, args.threads)


def measure(run: Path, url: str, threads: int, max_new: int, rounds: int) -> dict[str, list[float]]:
    generate_once = generate_arm(run, threads, max_new)
    body = {"prompt": PROMPT, "controls": CONTROLS, "settings": {"max_new_tokens": max_new, "seed": 1234}}
    arms = {"generate": generate_once, "serve": lambda: post(url, body)["text"]}
    for arm in arms.values():
        arm()  # warm-up: first-call costs (lazy imports, allocator) are not the steady state
    times: dict[str, list[float]] = {name: [] for name in arms}
    texts: dict[str, set[str]] = {name: set() for name in arms}
    for round_ in range(rounds):
        order = list(arms) if round_ % 2 == 0 else list(reversed(arms))
        for name in order:
            seconds, text = timed(arms[name])
            print(f"round {round_ + 1} {name}: {seconds:.2f} s", file=sys.stderr, flush=True)
            times[name].append(seconds)
            texts[name].add(text)
    if texts["generate"] != texts["serve"]:
        raise SystemExit(f"the arms generated different text: {texts}")
    return times


def report(times: dict[str, list[float]], max_new: int, threads: int) -> None:
    print(f"max_new_tokens={max_new}, torch threads={threads}, rounds={len(times['serve'])}\n")
    print("| arm | median s | best s | rounds (s) |")
    print("|---|---|---|---|")
    for name, values in times.items():
        listed = ", ".join(f"{v:.2f}" for v in values)
        print(f"| {name} | {statistics.median(values):.3f} | {min(values):.3f} | {listed} |")
    best = min(times["serve"]) / min(times["generate"])
    median = statistics.median(times["serve"]) / statistics.median(times["generate"])
    print(f"\nserve/generate = {best:.2f}x best of rounds (target <= 1.2x); {median:.2f}x of the medians")


if __name__ == "__main__":
    main()
