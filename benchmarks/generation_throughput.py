"""Sampling throughput: our batched sampler against plain transformers `generate`, same model and settings.

Three arms over the same prompts, in one process, in alternating order per round:
  ours        HFSampler.generate: length-sorted left-padded batches, KV cache, raw-logit log-probs and
              end-of-turn/stop handling included (what SuperHF/best-of-n call)
  hf-single   model.generate called once per prompt (num_return_sequences=n): the simple loop
  hf-batched  model.generate on tokenizer-padded batches in the given order (no sorting, no log-probs)
Settings: sampling at temperature 1.0, top-p 0.95, n completions per prompt, max_new_tokens. Tokens counted are
generated tokens up to and including the end of turn (what each arm returns). Prints a markdown table and the
ratios ours/hf-single and ours/hf-batched.

  python benchmarks/generation_throughput.py                       # bundled SmolLM2-135M, CPU
  python benchmarks/generation_throughput.py --model tiny --prompts 8
  python benchmarks/generation_throughput.py --smoke              # seconds (what the tests run)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from steerable.backbone import load_backbone
from steerable.config.schema import LoraConfig, ModelConfig, ModelSource
from steerable.data.demo import demo_prompts
from steerable.generation import GenerationSettings, HFSampler
from steerable.generation.hf import end_token_ids, render_prompt
from steerable.report import markdown_table

# --smoke: the tiny random-weight model, 2 prompts x 2 samples x 4 tokens: seconds (explicit flags win).
SMOKE = dict(model="tiny", prompts=2, n=2, max_new_tokens=4, batch_size=2, repeats=1, threads=1)


def model_config(name: str) -> ModelConfig:
    if name == "tiny":
        return ModelConfig(name="tiny", source=ModelSource["tiny"], lora=LoraConfig(enabled=False))
    return ModelConfig(name="smollm2-135m", source=ModelSource["gguf"], lora=LoraConfig(enabled=False))


def generated_tokens(rows: torch.Tensor, end_ids: list[int], pad_id: int) -> int:
    """Tokens up to and including the first end-of-turn of each row (padding after it not counted)."""
    total = 0
    for row in rows.tolist():
        count = 0
        for token in row:
            count += 1
            if token in end_ids:
                break
        total += count if row else 0
    return total


def run_ours(model, tokenizer, prompts, settings: GenerationSettings) -> int:
    completions = HFSampler(model, tokenizer).generate(prompts, settings)
    return sum(len(c.token_ids) for c in completions)


def hf_kwargs(model, tokenizer, settings: GenerationSettings) -> dict:
    return dict(
        max_new_tokens=settings.max_new_tokens,
        do_sample=True,
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=0,
        num_return_sequences=settings.num_return_sequences,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=end_token_ids(model, tokenizer, None),
    )


def run_hf_single(model, tokenizer, prompts, settings: GenerationSettings) -> int:
    kwargs, ends = hf_kwargs(model, tokenizer, settings), end_token_ids(model, tokenizer, None)
    total = 0
    with torch.no_grad():
        for prompt in prompts:
            encoded = tokenizer(
                render_prompt(tokenizer, prompt), return_tensors="pt", add_special_tokens=False
            )
            out = model.generate(**encoded, **kwargs)
            total += generated_tokens(out[:, encoded["input_ids"].shape[1] :], ends, tokenizer.pad_token_id)
    return total


def run_hf_batched(model, tokenizer, prompts, settings: GenerationSettings) -> int:
    kwargs, ends = hf_kwargs(model, tokenizer, settings), end_token_ids(model, tokenizer, None)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    total = 0
    try:
        with torch.no_grad():
            for start in range(0, len(prompts), settings.batch_size):
                texts = [render_prompt(tokenizer, p) for p in prompts[start : start + settings.batch_size]]
                encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
                out = model.generate(**encoded, **kwargs)
                total += generated_tokens(
                    out[:, encoded["input_ids"].shape[1] :], ends, tokenizer.pad_token_id
                )
    finally:
        tokenizer.padding_side = side
    return total


ARMS = {"ours": run_ours, "hf-single": run_hf_single, "hf-batched": run_hf_batched}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", choices=["smollm2-135m", "tiny"])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=4, help="completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per batch (ours, hf-batched)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for every arm")
    parser.add_argument("--smoke", action="store_true", help=f"a seconds-long run: {SMOKE}")
    args = parser.parse_args()
    if args.smoke:
        args = parser.parse_args(namespace=argparse.Namespace(**SMOKE))
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_backbone(model_config(args.model))
    model.eval()
    prompts = [p.messages for p in demo_prompts(args.prompts)]
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        do_sample=True,
        temperature=1.0,
        top_p=0.95,
        num_return_sequences=args.n,
        batch_size=args.batch_size,
        seed=0,
    )
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16 else torch.autocast("cpu", enabled=False)
    )
    best: dict[str, tuple[float, int, float]] = {}
    names = list(ARMS)
    for round_index in range(args.repeats):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            torch.manual_seed(round_index)
            started = time.perf_counter()
            with autocast:
                tokens = ARMS[name](model, tokenizer, prompts, settings)
            seconds = time.perf_counter() - started
            rate = tokens / seconds
            print(f"round {round_index + 1} {name}: {tokens} tokens in {seconds:.1f}s = {rate:.1f} tokens/s")
            if name not in best or rate > best[name][2]:
                best[name] = (seconds, tokens, rate)
    rows = [[name, f"{s:.1f}", t, f"{r:.1f}"] for name, (s, t, r) in best.items()]
    print()
    print(
        f"model={args.model}, {args.prompts} prompts x n={args.n}, max_new_tokens={args.max_new_tokens}, "
        f"batch={args.batch_size} prompts, bf16={args.bf16}, threads={torch.get_num_threads()}, "
        f"best of {args.repeats} rounds"
    )
    print(markdown_table(["arm", "seconds", "generated tokens", "tokens/s"], rows))
    ours = best["ours"][2]
    print(
        f"\nours/hf-single = {ours / best['hf-single'][2]:.2f}x, ours/hf-batched = {ours / best['hf-batched'][2]:.2f}x"
    )


if __name__ == "__main__":
    main()
