"""Forward+backward time of CLP's conditioned policy (m copies, per-example weights) against a plain single LoRA.

Same base model, LoRA rank and target modules (all linear layers), same batch of token ids; each arm runs
`--steps` timed forward+backward passes after `--warmup` untimed ones, arms alternating per round, best round kept.
  plain       one LoRA adapter on every target (what SFT trains)
  clp-attn    shared LoRA on the MLP + m conditioned copies on q/k/v/o, mixed per example
  clp-full    m conditioned copies on every target
  clp-logit   shared LoRA everywhere + m copies of a LoRA on the output layer
Prints a markdown table and each arm's time relative to plain (target for attn: <= 1.3x).

  python benchmarks/clp_forward.py                 # bundled SmolLM2-135M, batch 4 x 128 tokens, bf16 autocast
  python benchmarks/clp_forward.py --model tiny
  python benchmarks/clp_forward.py --smoke         # seconds: tiny model, one step (what the tests run)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from steerable.backbone.adapters import wrap_lora
from steerable.backbone.loading import load_base_model, load_tokenizer
from steerable.config.schema import LoraConfig, ModelConfig, ModelSource
from steerable.hardware import cpu_capability, cpu_has_native_bf16
from steerable.methods.clp.conditioning import build_conditioned_policy, split_targets
from steerable.report import markdown_table

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
# --smoke: the tiny random-weight model, one step: the whole script in seconds (explicit flags win).
SMOKE = dict(model="tiny", batch=2, length=16, steps=1, warmup=1, repeats=1)


def model_config(name: str) -> ModelConfig:
    source = ModelSource["tiny"] if name == "tiny" else ModelSource["gguf"]
    return ModelConfig(name=name, source=source)


def build(arm: str, cfg: ModelConfig, lora: LoraConfig, copies: int):
    tokenizer = load_tokenizer(cfg)
    base = load_base_model(cfg, tokenizer)
    if arm == "plain":
        return wrap_lora(base, lora), None
    variant = arm.removeprefix("clp-")
    shared, conditioned = split_targets(variant, lora.target_modules, ATTENTION, "lm_head")
    return build_conditioned_policy(base, lora, shared, conditioned, copies)


def time_arm(
    model, mixer, ids: torch.Tensor, weights: torch.Tensor, steps: int, warmup: int, bf16: bool
) -> float:
    model.train()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    elapsed = 0.0
    for step in range(warmup + steps):
        started = time.perf_counter()
        with autocast, mixer.weighted(weights) if mixer is not None else torch.enable_grad():
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        if step >= warmup:
            elapsed += time.perf_counter() - started
    return elapsed / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", choices=["smollm2-135m", "tiny"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--fp32", action="store_true", help="no bf16 autocast (the default where the CPU has no native bf16)"
    )
    parser.add_argument("--arms", default="plain,clp-attn,clp-full,clp-logit")
    parser.add_argument("--smoke", action="store_true", help=f"a seconds-long run: {SMOKE}")
    args = parser.parse_args()
    if args.smoke:
        args = parser.parse_args(namespace=argparse.Namespace(**SMOKE))
    # bf16 only where the CPU computes it natively (AVX512_BF16 / AMX); emulated it is 25-39x slower
    use_bf16 = not args.fp32 and (torch.cuda.is_available() or cpu_has_native_bf16())
    print(f"CPU {cpu_capability()}, native bf16 {cpu_has_native_bf16()}: bf16 autocast {use_bf16}")
    cfg = model_config(args.model)
    lora = LoraConfig(r=16, alpha=32, dropout=0.0)
    arms = args.arms.split(",")
    built = {arm: build(arm, cfg, lora, args.copies) for arm in arms}
    vocab = built[arms[0]][0].config.vocab_size
    ids = torch.randint(0, vocab, (args.batch, args.length), generator=torch.Generator().manual_seed(0))
    weights = torch.distributions.Dirichlet(torch.ones(args.copies)).sample((args.batch,))
    best: dict[str, float] = {}
    for round_index in range(args.repeats):
        order = arms if round_index % 2 == 0 else arms[::-1]
        for arm in order:
            model, mixer = built[arm]
            seconds = time_arm(model, mixer, ids, weights, args.steps, args.warmup, use_bf16)
            print(f"round {round_index + 1} {arm}: {seconds * 1000:.0f} ms/step")
            best[arm] = min(best.get(arm, float("inf")), seconds)
    plain = best.get("plain")
    rows = []
    for arm in arms:
        model, _ = built[arm]
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        ratio = f"{best[arm] / plain:.2f}x" if plain else ""
        rows.append([arm, f"{best[arm] * 1000:.0f}", trainable, ratio])
    print()
    print(
        f"model={args.model}, batch {args.batch} x {args.length} tokens, m={args.copies}, LoRA r=16 on all linear layers, "
        f"bf16={use_bf16}, threads={torch.get_num_threads()}, best of {args.repeats} rounds x {args.steps} steps"
    )
    print(markdown_table(["arm", "ms per forward+backward", "trainable params", "vs plain"], rows))


if __name__ == "__main__":
    main()
