"""One CLP policy-gradient step (sample, score, policy and reference log-probs, backward, optimizer step), the
way the trainer ran it before against the way it runs now, each arm in its own process (--smoke: one process).

  before   sampling through PEFT's per-adapter LoRA path with a hook per copy; logits at every position;
           glibc malloc as it comes (freed activations go back to the kernel and fault in again next step)
  now      sampling through the mixer's stacked low-rank product; logits from the first response column on
           (`logits_to_keep`); malloc keeps freed memory (steerable/allocator.py)

Same model, adapters, prompts, seeds and step count; arms alternate per round and the best round is kept. Prints
a table with each part's seconds per step, minor page faults per step and the now/before ratio.

  python benchmarks/rl_step.py                     # bundled SmolLM2-135M, CLP full, 4 prompts x 4 samples, 64 tokens
  python benchmarks/rl_step.py --smoke             # seconds: tiny model, one step (what the tests run)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from steerable.allocator import keep_freed_memory
from steerable.backbone.loading import load_base_model, load_tokenizer
from steerable.config.schema import LoraConfig, ModelConfig, ModelSource
from steerable.generation import Engine, GenerationSettings
from steerable.generation import logprobs as logprob_module
from steerable.hardware import cpu_capability, cpu_has_native_bf16
from steerable.methods.clp.conditioning import (
    ParameterConditioning,
    WeightSampler,
    build_conditioned_policy,
    split_targets,
)
from steerable.report import markdown_table
from steerable.rewards.base import RewardStack, build_reward_source
from steerable.training.lm_module import OptimSettings
from steerable.training.policy_gradient import PGSettings, PolicyGradientModule

ARMS = ("before", "now")
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
QUESTIONS = [
    "How should I water tomatoes?",
    "Is it worth washing the dishes right after meals?",
    "How do I start running?",
    "What should I pack for a day hike?",
]
# --smoke: the tiny random-weight model, one step: the whole script in seconds (explicit flags win).
SMOKE = dict(model="tiny", tokens=8, steps=1, warmup=0, repeats=1, smoke=True)
PARTS = ("sample", "logprobs", "backward")


def build(args: argparse.Namespace, arm: str) -> PolicyGradientModule:
    source = ModelSource["tiny"] if args.model == "tiny" else ModelSource["gguf"]
    cfg = ModelConfig(name=args.model, source=source)
    tokenizer = load_tokenizer(cfg)
    lora = LoraConfig(r=16, alpha=32, dropout=0.0)
    shared, conditioned = split_targets(args.variant, lora.target_modules, ATTENTION, "lm_head")
    torch.manual_seed(0)
    model, mixer = build_conditioned_policy(load_base_model(cfg, tokenizer), lora, shared, conditioned, 2)
    for name, param in model.named_parameters():  # copies apart, as after some training
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.01)
    draw = WeightSampler(2, 0.3, "example")
    conditioning = ParameterConditioning(mixer, draw, stacked_sampling=arm == "now")
    return demo_step_module(args, model, tokenizer, conditioning, lr=1e-4)


def demo_step_module(
    args: argparse.Namespace, model, tokenizer, conditioning: ParameterConditioning, lr: float
) -> PolicyGradientModule:
    """The RL module on the demo suite's two rewards, sampling `args.samples` x `args.tokens` at temperature 1."""
    rewards = RewardStack(
        {
            "concise": build_reward_source({"type": "length", "log_scale": True, "target": 0}),
            "positivity": build_reward_source({"type": "sentiment"}),
        }
    )
    generation = GenerationSettings(
        max_new_tokens=args.tokens, do_sample=True, num_return_sequences=args.samples, batch_size=32, seed=0
    )
    settings = PGSettings(samples_per_prompt=args.samples, generation=generation, engine=Engine("<|im_end|>"))
    optim = OptimSettings(lr=lr, scheduler="constant", total_steps=100)
    return PolicyGradientModule(model, tokenizer, optim, settings, rewards.score, conditioning)


class PartTimer:
    """Seconds spent in the sampler, in the log-prob forwards and in backward, per step."""

    def __init__(self, module: PolicyGradientModule) -> None:
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self.module = module

    @contextmanager
    def part(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started

    def install(self) -> None:
        settings = self.module.settings
        engine = settings.engine
        timer = self

        class TimedEngine(type(engine)):
            def sampler(self, model, tokenizer):
                inner = engine.sampler(model, tokenizer)
                generate = inner.generate

                def timed(*a, **k):
                    with timer.part("sample"):
                        return generate(*a, **k)

                inner.generate = timed
                return inner

        object.__setattr__(settings, "engine", TimedEngine(engine.end_of_turn, engine.config))
        import steerable.training.policy_gradient as pg

        scored = pg.policy_and_reference_logprobs

        def timed_logprobs(*a, **k):
            with timer.part("logprobs"):
                return scored(*a, **k)

        pg.policy_and_reference_logprobs = timed_logprobs


def worker(args: argparse.Namespace, arm: str) -> dict:
    import steerable.training.policy_gradient as pg

    torch.set_num_threads(args.threads)
    takes_keep, scored = logprob_module._takes_logits_to_keep, pg.policy_and_reference_logprobs
    if arm == "now":
        keep_freed_memory()
    else:
        logprob_module._takes_logits_to_keep = lambda model: False
    try:
        return timed_steps(args, arm)
    finally:  # as it was, for the next arm when both run in one process (--smoke)
        logprob_module._takes_logits_to_keep, pg.policy_and_reference_logprobs = takes_keep, scored


def timed_steps(args: argparse.Namespace, arm: str) -> dict:
    module = build(args, arm)
    timer = PartTimer(module)
    timer.install()
    prompts = [[{"role": "user", "content": q}] for q in QUESTIONS]
    optimizer = torch.optim.AdamW([p for p in module.model.parameters() if p.requires_grad], lr=1e-4)
    module.model.train()
    totals, faults = [], []
    for step in range(args.warmup + args.steps):
        timer.seconds = dict.fromkeys(PARTS, 0.0)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        started = time.perf_counter()
        loss, _ = module.rl_loss(prompts)
        with timer.part("backward"):
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= args.warmup:
            totals.append({**timer.seconds, "step": time.perf_counter() - started})
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    mean = {k: sum(t[k] for t in totals) / len(totals) for k in totals[0]}
    return {**mean, "faults": sum(faults) / len(faults)}


def run_arm(args: argparse.Namespace, arm: str) -> dict:
    if (
        args.smoke
    ):  # seconds, not a measurement: both arms in this process (the allocator stays as "now" set it)
        return worker(args, arm)
    flags = [f"--{k}={v}" for k, v in vars(args).items() if k not in ("worker", "smoke", "repeats")]
    out = subprocess.run(
        [sys.executable, __file__, f"--worker={arm}", *flags], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", choices=["smollm2-135m", "tiny"])
    parser.add_argument("--variant", default="full", choices=["full", "attn", "logit"])
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help=f"a seconds-long run: {SMOKE}")
    args = parser.parse_args()
    if args.smoke:
        args = parser.parse_args(namespace=argparse.Namespace(**SMOKE))  # in one process, see run_arm
    if args.worker:
        print(json.dumps(worker(args, args.worker)))
        return
    print(f"CPU {cpu_capability()}, native bf16 {cpu_has_native_bf16()}; fp32, {args.threads} threads")
    best: dict[str, dict] = {}
    for round_index in range(args.repeats):
        for arm in ARMS if round_index % 2 == 0 else ARMS[::-1]:
            result = run_arm(args, arm)
            print(f"round {round_index + 1} {arm}: {result['step']:.1f} s/step", flush=True)
            if arm not in best or result["step"] < best[arm]["step"]:
                best[arm] = result
    rows = [
        [arm, *(f"{best[arm][k]:.2f}" for k in (*PARTS, "step")), f"{best[arm]['faults']:.0f}"]
        for arm in ARMS
    ]
    rows.append(
        ["now / before", *(f"{best['now'][k] / best['before'][k]:.2f}x" for k in (*PARTS, "step")), ""]
    )
    print()
    print(
        f"model={args.model}, CLP {args.variant}, {len(QUESTIONS)} prompts x {args.samples} samples, "
        f"{args.tokens} new tokens, {args.steps} timed steps after {args.warmup} warm-up, best of {args.repeats}"
    )
    print(markdown_table(["arm", *(f"{p} s" for p in PARTS), "step s", "minor faults"], rows))


if __name__ == "__main__":
    main()
