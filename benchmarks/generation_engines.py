"""Generation engines side by side: today's HF sampler, the faster HF path and vLLM (where installed).

Part 1, sampling throughput, in one process over the same prompts and settings (temperature 1.0, top-p 0.95,
`--new-tokens` new tokens, n samples per prompt), for each shape (prompts x n), LoRA on/off and precision:
  hf          HFSampler as the online methods called it before `generation.*` existed (no speed-ups)
  hf-fast     make_sampler(generation.engine=hf): LoRA merged for sampling, one prefill per prompt
  vllm        make_sampler(generation.engine=vllm), colocated, eager on CPU (start-up time reported apart)
LoRA on = a LoRA adapter (r=16, q/k/v/o) with non-zero B, as a policy during training has. tokens/s counts
generated tokens (up to and including the end of turn) over wall time; ratios are against `hf`.

Part 2 (`--superbatch`), the wall time of one real SuperHF superbatch (2 prompts x 16 samples, 64 tokens, then
the supervised steps) per engine: `steerable-train method=superhf ... trainer.max_steps=1` in a subprocess
each, reading train/generate_seconds and train/train_seconds from the run's metrics.csv.

  python benchmarks/generation_engines.py                                  # bundled SmolLM2-135M, CPU
  python benchmarks/generation_engines.py --shapes 32x8 --lora on --superbatch
  python benchmarks/generation_engines.py --smoke       # seconds: tiny model, HF engines (what the tests run)
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from steerable.backbone import load_backbone
from steerable.config.schema import GenerationConfig, LoraConfig, ModelConfig, ModelSource
from steerable.data.demo import demo_prompts
from steerable.generation import GenerationSettings, HFSampler, make_sampler
from steerable.hardware import cpu_has_native_bf16
from steerable.report import markdown_table

HAS_VLLM = importlib.util.find_spec("vllm") is not None
# --smoke: the tiny random-weight model, 2 prompts x 2 samples x 4 tokens, the HF engines (vLLM's start-up alone
# takes longer than the rest), fp32: seconds (explicit flags win).
SMOKE = dict(
    model="tiny", shapes=["2x2"], new_tokens=4, lora=["on"], rows_per_batch=4, engines=["hf", "hf-fast"],
    fp32_only=True,
)  # fmt: skip


def load(model: str, lora: bool):
    source = ModelSource["tiny"] if model == "tiny" else ModelSource["gguf"]
    cfg = ModelConfig(name=model, source=source, lora=LoraConfig(enabled=lora))
    policy, tokenizer = load_backbone(cfg)
    if lora:  # a policy mid-training: its adapter changes the output
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, param in policy.named_parameters():
                if "lora_B" in name:
                    param.add_(torch.randn(param.shape, generator=generator) * 0.01)
    return policy, tokenizer


def samplers(model, tokenizer, engines: list[str]) -> dict:
    out = {}
    for name in engines:
        if name == "hf":
            out[name] = HFSampler(model, tokenizer)
        elif name == "hf-fast":
            out[name] = make_sampler(model, tokenizer, None, GenerationConfig())
        elif name == "vllm":
            out[name] = make_sampler(model, tokenizer, None, GenerationConfig(engine="vllm"))
    return out


def throughput(sampler, prompts, settings: GenerationSettings, autocast) -> tuple[float, int]:
    started = time.perf_counter()
    with autocast:
        completions = sampler.generate(prompts, settings)
    seconds = time.perf_counter() - started
    return seconds, sum(len(c.token_ids) for c in completions)


def part_one(args, engines: list[str]) -> list[dict]:
    rows = []
    precisions = ["fp32"] + (["bf16"] if cpu_has_native_bf16() and not args.fp32_only else [])
    for lora in args.lora:
        model, tokenizer = load(args.model, lora == "on")
        model.eval()
        for precision in precisions:
            autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
            if precision == "bf16" and "vllm" in engines:
                print(
                    "note: the vLLM engine runs the model's own dtype (fp32) under bf16 autocast", flush=True
                )
            started = time.perf_counter()
            by_engine = samplers(model, tokenizer, engines)
            warm_prompts = [p.messages for p in demo_prompts(2)]
            for name, sampler in by_engine.items():  # first calls (lazy set-up, engine start) untimed
                warm = time.perf_counter()
                with autocast:
                    sampler.generate(
                        warm_prompts, GenerationSettings(max_new_tokens=4, num_return_sequences=2)
                    )
                print(f"{name}: first call {time.perf_counter() - warm:.1f} s", flush=True)
            for shape in args.shapes:
                prompts_n, n = (int(x) for x in shape.split("x"))
                prompts = [p.messages for p in demo_prompts(prompts_n)]
                settings = GenerationSettings(
                    max_new_tokens=args.new_tokens,
                    do_sample=True,
                    temperature=1.0,
                    top_p=0.95,
                    num_return_sequences=n,
                    batch_size=max(1, args.rows_per_batch // n),
                    seed=0,
                )
                base = None
                for name, sampler in by_engine.items():
                    seconds, tokens = throughput(sampler, prompts, settings, autocast)
                    rate = tokens / seconds
                    base = rate if name == "hf" else base
                    row = {
                        "engine": name,
                        "shape": shape,
                        "LoRA": lora,
                        "precision": precision,
                        "tokens": tokens,
                        "seconds": f"{seconds:.1f}",
                        "tokens/s": f"{rate:.1f}",
                        "vs hf": f"{rate / base:.2f}x" if base else "",
                    }
                    rows.append(row)
                    print(row, flush=True)
            del by_engine
            print(f"({lora}, {precision}) done in {time.perf_counter() - started:.0f} s", flush=True)
    return rows


def superbatch(engine: str, model: str, out: Path) -> dict:
    """One SuperHF superbatch through the real CLI; its generate/train seconds from metrics.csv."""
    overrides = {
        "hf": ["generation.merge_lora=false", "generation.share_prompt_cache=false"],
        "hf-fast": [],
        "vllm": ["generation.engine=vllm"],
    }[engine]
    command = [
        sys.executable,
        "-m",
        "steerable.cli.train",
        "method=superhf",
        f"model={model}",
        "data=demo",
        "reward=[verbosity]",
        "method.reward=verbosity",
        "method.eval_every=1000",
        "method.num_prompts=2",  # = method.prompt_accumulation: one superbatch
        "method.stages=[train]",
        "report.num_samples=0",
        f"output_root={out / engine}",
        *overrides,
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - started
    metrics = next((out / engine).rglob("metrics.csv"))
    row = next(r for r in csv.DictReader(metrics.open()) if r.get("train/generate_seconds"))
    return {
        "engine": engine,
        "generate s": f"{float(row['train/generate_seconds']):.1f}",
        "train s": f"{float(row['train/train_seconds']):.1f}",
        "process wall s (incl. start-up)": f"{wall:.0f}",
    }


def table(rows: list[dict]) -> str:
    return markdown_table(list(rows[0]), [list(r.values()) for r in rows]) if rows else "(no rows)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", choices=["smollm2-135m", "tiny"])
    parser.add_argument("--shapes", nargs="+", default=["32x8", "128x8"], help="prompts x samples")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--lora", nargs="+", default=["on", "off"], choices=["on", "off"])
    parser.add_argument("--rows-per-batch", type=int, default=32, help="sampled rows per forward batch")
    parser.add_argument("--engines", nargs="+", default=["hf", "hf-fast", "vllm"])
    parser.add_argument("--fp32-only", action="store_true")
    parser.add_argument("--superbatch", action="store_true", help="also time one SuperHF superbatch")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--smoke", action="store_true", help=f"a seconds-long run: {SMOKE}")
    args = parser.parse_args()
    if args.smoke:
        args = parser.parse_args(namespace=argparse.Namespace(**SMOKE))
    engines = [e for e in args.engines if e != "vllm" or HAS_VLLM]
    if "vllm" in args.engines and not HAS_VLLM:
        print("vLLM is not installed: its rows are left out (docs/engines.md)", flush=True)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {cpu_has_native_bf16()}",
        flush=True,
    )
    if not args.skip_throughput:
        print(table(part_one(args, engines)))
    if args.superbatch:
        with tempfile.TemporaryDirectory() as tmp:
            rows = [superbatch(engine, args.model, Path(tmp)) for engine in engines]
        base = float(rows[0]["generate s"])
        for row in rows:
            row["generate vs hf"] = f"{base / float(row['generate s']):.2f}x"
        print(table(rows))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
