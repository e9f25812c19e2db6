"""One CLP policy-gradient step with a shared adapter that never trains (`method.shared_lr_scale=0`), three ways,
each arm in its own process (--smoke: one):

  before      the shared adapter kept in the model, in the optimizer at learning rate 0
  two passes  the shared adapter removed once the copies exist; policy and reference log-probs each from a
              full forward
  one trunk   removed, and where every adapter is in the output layer (`logit`) one pass through the layers
              below it serves the policy's and the reference's log-probs (policy_and_reference_logprobs)
  now         removed, and (`logit`) no pass below the output layer at all: the output layer's inputs recorded
              while sampling (`GenerationSettings.keep_hidden`) give both log-probs

All arms are the same policy: the shared adapter's zero B adds exactly nothing. What differs is the work (its
low-rank products in every forward; for `logit`, a backward through the whole trunk and a second trunk forward
for the reference) and gradient clipping (its gradients counted in the clipped norm). Prints seconds per part of
a step, the gradient norm before clipping and the factor clipping applied, per arm, and the ratios to now.

  python benchmarks/frozen_shared.py                  # bundled SmolLM2-135M, CLP logit, 4 prompts x 4 samples
  python benchmarks/frozen_shared.py --variant attn
  python benchmarks/frozen_shared.py --prompts 8      # the demo arm's 8 prompts per step
  python benchmarks/frozen_shared.py --smoke          # seconds: tiny model, one step (what the tests run)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.rl_step import ATTENTION, PARTS, QUESTIONS, PartTimer, demo_step_module
from steerable.allocator import keep_freed_memory
from steerable.backbone.loading import load_base_model, load_tokenizer
from steerable.config.schema import LoraConfig, ModelConfig, ModelSource
from steerable.generation import logprobs as logprob_module
from steerable.hardware import cpu_capability, cpu_has_native_bf16
from steerable.methods.clp.conditioning import (
    SHARED,
    ParameterConditioning,
    WeightSampler,
    build_conditioned_policy,
    split_targets,
)
from steerable.report import markdown_table
from steerable.training import policy_gradient as pg
from steerable.training.lm_module import parameter_groups
from steerable.training.policy_gradient import PolicyGradientModule

ARMS = ("before", "two passes", "one trunk", "now")
SMOKE = dict(model="tiny", tokens=8, steps=1, warmup=0, smoke=True)
CLIP = 1.0  # trainer.gradient_clip_val's default


def build(args: argparse.Namespace, arm: str) -> PolicyGradientModule:
    source = ModelSource["tiny"] if args.model == "tiny" else ModelSource["gguf"]
    cfg = ModelConfig(name=args.model, source=source)
    tokenizer = load_tokenizer(cfg)
    lora = LoraConfig(r=8, alpha=16, dropout=0.0)
    shared, conditioned = split_targets(args.variant, lora.target_modules, ATTENTION, "lm_head")
    torch.manual_seed(0)
    model, mixer = build_conditioned_policy(
        load_base_model(cfg, tokenizer), lora, shared, conditioned, 2, keep_shared=arm == "before"
    )
    for name, param in model.named_parameters():  # copies apart, as after some training; shared stays zero
        if "lora_B" in name and f".{SHARED}." not in name:
            torch.nn.init.normal_(param, std=0.01)
    conditioning = ParameterConditioning(mixer, WeightSampler(2, 0.1, "example"), stacked_sampling=True)
    return demo_step_module(args, model, tokenizer, conditioning, lr=2e-3)


def timed_steps(args: argparse.Namespace, arm: str) -> dict:
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    split, scored, sampled = (
        logprob_module._trunk_and_head,
        pg.policy_and_reference_logprobs,
        pg.scores_from_sampled_hidden,
    )
    if arm in ("before", "two passes"):
        logprob_module._trunk_and_head = lambda model: None  # never the one-trunk-pass shortcut
    if arm != "now":
        pg.scores_from_sampled_hidden = lambda model: False  # nothing recorded while sampling
    try:
        return _timed_steps(args, arm)
    finally:  # as it was (PartTimer wraps the log-probs), for the next arm when all run in one process
        logprob_module._trunk_and_head, pg.policy_and_reference_logprobs = split, scored
        pg.scores_from_sampled_hidden = sampled


def _timed_steps(args: argparse.Namespace, arm: str) -> dict:
    module = build(args, arm)
    timer = PartTimer(module)
    timer.install()
    prompts = [[{"role": "user", "content": q}] for q in (QUESTIONS * args.prompts)[: args.prompts]]
    named = [(n, p) for n, p in module.model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameter_groups(named, 2e-3, ((f".{SHARED}.", 0.0),)))
    trained = [p for n, p in named if f".{SHARED}." not in n]
    module.model.train()
    rows = []
    for step in range(args.warmup + args.steps):
        timer.seconds = dict.fromkeys(PARTS, 0.0)
        started = time.perf_counter()
        loss, _ = module.rl_loss(prompts)
        with timer.part("backward"):
            loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_([p for _, p in named], CLIP))  # as Lightning clips
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= args.warmup:
            rows.append({**timer.seconds, "step": time.perf_counter() - started, "norm": norm})
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
    return {**mean, "clip": min(1.0, CLIP / mean["norm"]), "trained": sum(p.numel() for p in trained)}


def run_arm(args: argparse.Namespace, arm: str) -> dict:
    if args.smoke:  # seconds, not a measurement: both arms in this process
        return timed_steps(args, arm)
    flags = [f"--{k}={v}" for k, v in vars(args).items() if k not in ("worker", "smoke")]
    out = subprocess.run(
        [sys.executable, __file__, f"--worker={arm}", *flags], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", choices=["smollm2-135m", "tiny"])
    parser.add_argument("--variant", default="logit", choices=["attn", "logit"])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help=f"a seconds-long run: {SMOKE}")
    args = parser.parse_args()
    if args.smoke:
        args = parser.parse_args(namespace=argparse.Namespace(**SMOKE))
    if args.worker:
        print(json.dumps(timed_steps(args, args.worker)))
        return
    print(f"CPU {cpu_capability()}, native bf16 {cpu_has_native_bf16()}; fp32, {args.threads} threads")
    result = {arm: run_arm(args, arm) for arm in ARMS}
    columns = (*PARTS, "step")
    rows = [
        [
            arm,
            *(f"{result[arm][k]:.2f}" for k in columns),
            f"{result[arm]['norm']:.3g}",
            f"{result[arm]['clip']:.3g}",
        ]
        for arm in ARMS
    ]
    for base in ("two passes", "one trunk"):
        rows.append(
            [f"now / {base}", *(f"{result['now'][k] / result[base][k]:.2f}x" for k in columns), "", ""]
        )
    print()
    print(
        f"model={args.model}, CLP {args.variant} with shared_lr_scale=0, {args.prompts} prompts x "
        f"{args.samples} samples, {args.tokens} new tokens, {args.steps} timed steps after {args.warmup} warm-up; "
        f"arms as in this script's docstring"
    )
    headers = ["arm", *(f"{p} s" for p in PARTS), "step s", "grad norm", "clip factor"]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
