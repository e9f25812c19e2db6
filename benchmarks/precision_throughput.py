"""Training throughput of our SFT module by precision (32-true vs bf16-mixed), one run, same model and batch.

    python benchmarks/precision_throughput.py [--hidden 1024 --layers 12 --batch 8 --seq 512 --steps 20]
    python benchmarks/precision_throughput.py --smoke    # seconds: a 2-layer, 64-wide model (what the tests run)

Uses a random-weight Llama of the given shape (no download) with LoRA on all linear layers, on the GPU when
there is one. Prints a markdown table: tokens/s, step time, peak GPU memory, and the bf16/fp32 ratio.
"""

from __future__ import annotations

import argparse
import time

import lightning.pytorch as pl
import torch

from steerable.backbone.adapters import wrap_lora
from steerable.backbone.tiny import build_tiny_model, build_tiny_tokenizer
from steerable.config.schema import LoraConfig, TinyModelConfig
from steerable.training.lm_module import CausalLMModule, OptimSettings

# --smoke: a tiny shape, two steps: the whole script in seconds (explicit flags win).
SMOKE = dict(hidden=64, layers=2, batch=2, seq=32, steps=2, warmup=1)


class StepTimer(pl.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self._start = warmup, [], 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if batch_idx >= self.warmup:
            self.times.append(time.perf_counter() - self._start)


def measure(precision: str, args: argparse.Namespace) -> dict[str, float]:
    torch.manual_seed(0)
    tokenizer = build_tiny_tokenizer()
    shape = TinyModelConfig(
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=args.hidden // 256 or 1,
        intermediate_size=args.hidden * 4,
        max_position_embeddings=args.seq,
    )
    model = wrap_lora(build_tiny_model(shape, tokenizer), LoraConfig(r=16, alpha=32, dropout=0.0))
    ids = torch.randint(0, len(tokenizer) - 3, (args.batch * (args.steps + args.warmup), args.seq))
    data = [{"input_ids": row, "attention_mask": torch.ones_like(row), "labels": row} for row in ids]
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch)
    module = CausalLMModule(model, OptimSettings(lr=1e-4, total_steps=args.steps + args.warmup))
    timer = StepTimer(args.warmup)
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_steps=args.steps + args.warmup,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[timer],
        enable_model_summary=False,
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, loader)
    step = sum(timer.times) / len(timer.times)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    return {"tokens_per_s": args.batch * args.seq / step, "step_s": step, "peak_gib": peak}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help=f"a seconds-long run: {SMOKE}")
    args = parser.parse_args()
    if args.smoke:
        args = parser.parse_args(namespace=argparse.Namespace(**SMOKE))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    results = {p: measure(p, args) for p in ("32-true", "bf16-mixed")}
    print(
        f"device: {device}; Llama hidden={args.hidden} layers={args.layers}, LoRA r=16 on all linear layers, "
        f"batch {args.batch} x {args.seq} tokens, {args.steps} timed steps"
    )
    print("| precision | tokens/s | step (s) | peak GPU memory (GiB) |\n|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['tokens_per_s']:.0f} | {r['step_s']:.4f} | {r['peak_gib']:.2f} |")
    ratio = results["bf16-mixed"]["tokens_per_s"] / results["32-true"]["tokens_per_s"]
    print(f"bf16-mixed / 32-true throughput = {ratio:.2f}x")


if __name__ == "__main__":
    main()
