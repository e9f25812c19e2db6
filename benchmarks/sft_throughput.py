"""SFT training throughput: steerable's Lightning SFT path against TRL's `SFTTrainer`, same work for both.

Both arms train the same model (same weights, same LoRA config) on the same examples, in the same order and
batches, with the same batch size, sequence length, loss mask (assistant content + end-of-turn token),
optimiser settings (AdamW, lr, cosine, clip 1.0) and precision. Each arm runs in its own subprocess, so the
peak memory it reports (VmHWM, reset just before training) is its own.

* ours: `load_backbone` -> `tokenize_conversation` + `fit_length` (what `tokenize_dataset` runs) ->
  `PaddingCollator` + `ResumableSampler`/`make_loader` -> `CausalLMModule` -> `build_trainer` (logger off;
  no checkpoint inside the timed steps), i.e. what `method=sft` runs;
* TRL: `SFTTrainer` on the same messages with `assistant_only_loss=True`. The tokenizer's ChatML template is
  given `{% generation %}` markers around each reply and its `<|im_end|>` (checked to render token-identical
  to the original template), and the script checks that TRL's input ids and labels equal ours exactly.

tokens/s = non-pad tokens of the measured steps / their wall time, measured from the end of the last warm-up
step to the end of the last step (data loading, forward, backward, clipping, optimiser step and per-step
logging all included).

    python benchmarks/sft_throughput.py --model smollm2-135m --steps 12 --batch-size 4 --max-length 256
    python benchmarks/sft_throughput.py --threads 1 --repeats 2 --bf16
    python benchmarks/sft_throughput.py --model tiny --steps 20 --threads 2

On a machine shared with other jobs use --threads 1: with more torch threads than free cores, every op waits
for a descheduled thread and steps get up to 10x slower (the table's "CPU util" column shows it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ARMS = ("ours", "trl")


# ------------------------------------------------------------------------------------------- helpers


def proc_status_kib(field: str) -> int:
    """A `Vm*` field of /proc/self/status, in KiB (0 where /proc is unavailable)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux clear_refs 5), so the next read is the peak from now on."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def model_config(name: str) -> Any:
    """The ModelConfig the project uses for `model=tiny` / `model=smollm2-135m` (LoRA r=16 on all projections)."""
    from steerable.config.schema import ModelConfig, ModelSource

    if name == "tiny":
        return ModelConfig(name="tiny", source=ModelSource["tiny"])
    return ModelConfig(name="smollm2-135m", source=ModelSource["gguf"])


def synthetic_conversations(n: int, seed: int) -> list[list[dict[str, str]]]:
    """Fallback chat data when `steerable.data.demo` is unavailable: one user question, one 1-7 sentence reply."""
    rng = random.Random(seed)
    topics = [
        "cooking",
        "travel",
        "sleep",
        "gardening",
        "running",
        "saving money",
        "reading",
        "learning Spanish",
    ]
    words = [
        "a",
        "useful",
        "habit",
        "is",
        "to",
        "plan",
        "ahead",
        "keep",
        "notes",
        "start",
        "small",
        "and",
        "review",
        "progress",
        "every",
        "week",
    ]
    out = []
    for i in range(n):
        topic = topics[i % len(topics)]
        reply = " ".join(
            " ".join(rng.choice(words) for _ in range(rng.randint(8, 16))).capitalize() + "."
            for _ in range(rng.randint(1, 7))
        )
        out.append(
            [
                {"role": "user", "content": f"Do you have any tips for {topic}?"},
                {"role": "assistant", "content": reply},
            ]
        )
    return out


def load_conversations(n: int, seed: int) -> list[list[dict[str, str]]]:
    try:
        from steerable.data.demo import demo_conversations
    except ImportError:
        return synthetic_conversations(n, seed)
    return [c.messages for c in demo_conversations(n, seed)]


def prepare_examples(
    tokenizer: Any, args: argparse.Namespace
) -> tuple[list[Any], list[list[dict]], list[int]]:
    """steps x batch examples tokenized by our path, their messages, and the order our sampler visits them."""
    from steerable.data.tokenize import LengthPolicyStats, end_of_turn_id, fit_length, tokenize_conversation
    from steerable.training.sampler import ResumableSampler

    needed = args.steps * args.batch_size
    eot = end_of_turn_id(tokenizer)
    stats = LengthPolicyStats()
    examples, messages = [], []
    for conv in load_conversations(2 * needed, args.seed):
        fitted = fit_length(tokenize_conversation(tokenizer, conv, eot), args.max_length, "truncate", stats)
        if fitted is not None:
            examples.append(fitted)
            messages.append(conv)
        if len(examples) == needed:
            break
    if len(examples) < needed:
        raise SystemExit(f"only {len(examples)} usable examples, need {needed}")
    order = list(ResumableSampler(len(examples), seed=args.seed))
    return examples, messages, order


# ----------------------------------------------------------------------------------------------- ours


def run_ours(args: argparse.Namespace) -> dict[str, Any]:
    import lightning.pytorch as pl
    import torch

    from steerable.backbone import load_backbone
    from steerable.config.schema import HardwareConfig, LoggerConfig, Precision, TrainerConfig
    from steerable.data.tokenize import PaddingCollator
    from steerable.training.lm_module import CausalLMModule, OptimSettings
    from steerable.training.sampler import ResumableSampler, make_loader
    from steerable.training.trainer import RunRecord, build_trainer

    pl.seed_everything(args.seed, workers=True, verbose=False)
    model, tokenizer = load_backbone(model_config(args.model))
    examples, _, _ = prepare_examples(tokenizer, args)
    sampler = ResumableSampler(len(examples), seed=args.seed)
    loader = make_loader(
        examples,
        args.batch_size,
        PaddingCollator(tokenizer.pad_token_id),
        sampler=sampler,
        seed=args.seed,
        drop_last=True,
    )
    module = CausalLMModule(
        model,
        OptimSettings(lr=args.lr, scheduler="cosine", total_steps=args.steps),
        sampler=sampler,
        batch_size=args.batch_size,
    )

    class StepTimer(pl.Callback):
        """Wall clock, non-pad tokens and loss at the end of every optimizer step."""

        def __init__(self) -> None:
            self.ends: list[float] = []
            self.cpu: list[float] = []
            self.tokens: list[int] = []
            self.losses: list[float] = []

        def on_train_batch_end(
            self,
            trainer: pl.Trainer,
            pl_module: pl.LightningModule,
            outputs: Any,
            batch: dict[str, torch.Tensor],
            batch_idx: int,
        ) -> None:
            self.ends.append(time.perf_counter())
            self.cpu.append(time.process_time())
            self.tokens.append(int(batch["attention_mask"].sum()))
            # The step's mean loss over its target tokens, as the module logs it (training_step returns the
            # summed loss: the module rescales gradients to the global mean before the optimizer step).
            self.losses.append(float(trainer.callback_metrics["train/loss"]))

    timer = StepTimer()
    hardware = HardwareConfig(name="cpu", precision=Precision["bf16-mixed" if args.bf16 else "32-true"])
    # TrainerConfig defaults (clip 1.0, log every step, deterministic). No periodic checkpoint, like TRL's
    # save_strategy="no"; the save_last checkpoint Lightning writes at train end falls after the last timed step.
    trainer_cfg = TrainerConfig(max_steps=args.steps, checkpoint_every_n_steps=args.steps + 1)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = build_trainer(
            trainer_cfg,
            hardware,
            RunRecord(LoggerConfig(name="none", csv=False), Path(run_dir), "sft-throughput", {}),
            [timer],
        )
        load_peak, rss_before = proc_status_kib("VmHWM"), proc_status_kib("VmRSS")
        reset_peak_rss()
        trainer.fit(module, loader)
        train_peak = proc_status_kib("VmHWM")
    return {
        "ends": timer.ends,
        "cpu": timer.cpu,
        "tokens": timer.tokens,
        "losses": timer.losses,
        "example_lengths": [len(ex.input_ids) for ex in examples],
        "target_tokens": sum(ex.num_target_tokens for ex in examples),
        "rss_before_kib": rss_before,
        "train_peak_kib": train_peak,
        "process_peak_kib": max(load_peak, train_peak),
        "steps_done": trainer.global_step,
    }


# ------------------------------------------------------------------------------------------------ TRL


def chatml_training_template(tokenizer: Any, conversations: list[list[dict]]) -> str:
    """The tokenizer's ChatML template with `{% generation %}` around each reply and its `<|im_end|>`.

    Checked to render every conversation to the same tokens as the original template, so TRL's
    `assistant_only_loss` masks exactly the tokens our `tokenize_conversation` trains on.
    """
    probe = tokenizer.apply_chat_template([{"role": "user", "content": "PROBE"}], tokenize=False)
    body = "<|im_start|>user\nPROBE<|im_end|>\n"
    if not probe.endswith(body):
        raise SystemExit("the TRL arm needs a ChatML chat template (<|im_start|>role ... <|im_end|>)")
    system_block = probe[: -len(body)]
    system = ""
    if system_block:
        head, tail = "<|im_start|>system\n", "<|im_end|>\n"
        if not (system_block.startswith(head) and system_block.endswith(tail)):
            raise SystemExit(f"unexpected default system block in the chat template: {system_block!r}")
        default = system_block[len(head) : -len(tail)]
        system = (
            "{% if loop.first and messages[0]['role'] != 'system' %}"
            "{{ '<|im_start|>system\n' + " + json.dumps(default) + " + '<|im_end|>\n' }}{% endif %}"
        )
    template = (
        "{% for message in messages %}" + system + "{% if message['role'] == 'assistant' %}"
        "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
        "{{ '\n' }}"
        "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    for conv in conversations:
        if tokenizer.apply_chat_template(conv, tokenize=False) != tokenizer.apply_chat_template(
            conv, tokenize=False, chat_template=template
        ):
            raise SystemExit("the generation-marked template renders differently from the tokenizer's own")
    return template


def run_trl(args: argparse.Namespace) -> dict[str, Any]:
    import transformers
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from steerable.backbone.adapters import peft_lora_config
    from steerable.backbone.loading import load_base_model, load_tokenizer

    transformers.set_seed(args.seed)
    cfg = model_config(args.model)
    tokenizer = load_tokenizer(cfg)
    model = load_base_model(cfg, tokenizer)
    examples, messages, order = prepare_examples(tokenizer, args)
    tokenizer.chat_template = chatml_training_template(tokenizer, messages)
    # Our sampler's order, read sequentially: both arms see identical batches.
    dataset = Dataset.from_list([{"messages": messages[i]} for i in order])

    class StepTimer(transformers.TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []
            self.cpu: list[float] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.ends.append(time.perf_counter())
            self.cpu.append(time.process_time())

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out_dir:
        config = SFTConfig(
            output_dir=out_dir,
            per_device_train_batch_size=args.batch_size,
            gradient_accumulation_steps=1,
            max_steps=args.steps,
            max_length=args.max_length,
            learning_rate=args.lr,
            lr_scheduler_type="cosine",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=1.0,
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            eval_strategy="no",
            assistant_only_loss=True,
            completion_only_loss=False,
            packing=False,
            padding_free=False,
            gradient_checkpointing=False,  # TRL's default is True; ours is off
            bf16=args.bf16,  # TRL's default is True; must be explicit for the fp32 arm
            use_cpu=True,
            dataloader_num_workers=0,
            train_sampling_strategy="sequential",
            seed=args.seed,
            data_seed=args.seed,
        )
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_lora_config(cfg.lora),
            callbacks=[timer],
        )
        prepared = trainer.train_dataset
        ours = [examples[i] for i in order]
        identical = len(prepared) == len(ours) and all(
            list(row["input_ids"]) == ex.input_ids and list(row["labels"]) == ex.labels
            for row, ex in zip(prepared, ours, strict=True)
        )
        lengths = [len(ids) for ids in prepared["input_ids"]]
        batches = [range(s * args.batch_size, (s + 1) * args.batch_size) for s in range(args.steps)]
        load_peak, rss_before = proc_status_kib("VmHWM"), proc_status_kib("VmRSS")
        reset_peak_rss()
        trainer.train()
        train_peak = proc_status_kib("VmHWM")
    losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
    return {
        "ends": timer.ends,
        "cpu": timer.cpu,
        "tokens": [sum(lengths[i] for i in b) for b in batches],  # sequential sampler: batch s = rows of b
        "losses": losses,
        "example_lengths": lengths,
        "target_tokens": sum(sum(1 for t in row if t != -100) for row in prepared["labels"]),
        "identical_to_ours": identical,
        "rss_before_kib": rss_before,
        "train_peak_kib": train_peak,
        "process_peak_kib": max(load_peak, train_peak),
        "steps_done": trainer.state.global_step,
    }


# ------------------------------------------------------------------------------------------- driver


def prime_model_cache(args: argparse.Namespace) -> dict[str, Any]:
    """Convert the bundled GGUF once (first use only), so neither arm's load time includes it."""
    if args.model != "tiny":
        from steerable.backbone import loading

        loading.convert_gguf(loading.bundled_gguf_path())
    return {}


def run_arm(arm: str, args: argparse.Namespace, forward: list[str]) -> dict[str, Any]:
    """Run one arm in a fresh interpreter; return its result (raise with the log tail on failure)."""
    with tempfile.TemporaryDirectory() as tmp:
        result_path, log_path = Path(tmp) / "result.json", Path(tmp) / "log.txt"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            *forward,
            "--arm",
            arm,
            "--result",
            str(result_path),
        ]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
        started = time.perf_counter()
        with open(log_path, "w") as log:
            code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        if code != 0 or not result_path.is_file():
            tail = log_path.read_text()[-6000:]
            raise SystemExit(f"arm {arm} failed (exit {code}):\n{tail}")
        result = json.loads(result_path.read_text())
        result["wall_s"] = time.perf_counter() - started
        return result


def summarize(result: dict[str, Any], warmup: int, threads: int) -> dict[str, Any]:
    """Throughput over the steps after the warm-up: from the end of step `warmup` to the end of the last."""
    ends, cpu, tokens = result["ends"], result["cpu"], result["tokens"]
    if len(ends) <= warmup:
        raise SystemExit(f"only {len(ends)} steps timed; need more than --warmup={warmup}")
    seconds = ends[-1] - ends[warmup - 1]
    measured = tokens[warmup:]
    lengths = result["example_lengths"]
    return {
        "steps": len(measured),
        "tokens": sum(measured),
        "seconds": seconds,
        "s_per_step": seconds / len(measured),
        "tokens_per_s": sum(measured) / seconds,
        # process CPU time / (wall x threads): well below 1 means other processes took the cores
        "cpu_util": (cpu[-1] - cpu[warmup - 1]) / (seconds * threads),
        "mean_len": sum(lengths) / len(lengths),
        "target_tokens": result["target_tokens"],
        "train_peak_mib": result["train_peak_kib"] / 1024,
        "train_delta_mib": (result["train_peak_kib"] - result["rss_before_kib"]) / 1024,
        "process_peak_mib": result["process_peak_kib"] / 1024,
        "first_loss": result["losses"][0] if result["losses"] else float("nan"),
        "final_loss": result["losses"][-1] if result["losses"] else float("nan"),
        "wall_s": result["wall_s"],
    }


def trl_missing() -> str | None:
    """Why the TRL arm cannot run here, or None."""
    import importlib.util

    if importlib.util.find_spec("trl") is None:
        return "trl is not installed (pip install 'steerable[bench]')"
    return None


def print_report(args: argparse.Namespace, runs: dict[str, list[dict]]) -> dict[str, Any]:
    """Markdown table (best run of each arm: contention only ever slows a run down) and the ratio."""
    from importlib.metadata import version

    arms = [arm for arm in ARMS if runs[arm]]
    summaries = {arm: [summarize(r, args.warmup, args.threads) for r in runs[arm]] for arm in arms}
    best = {arm: max(summaries[arm], key=lambda r: r["tokens_per_s"]) for arm in arms}
    precision = "bf16 autocast (ours: bf16-mixed, TRL: bf16=True)" if args.bf16 else "fp32"
    print(
        f"\nmodel={args.model} steps={args.steps} (warm-up {args.warmup}) batch_size={args.batch_size} "
        f"max_length={args.max_length} precision={precision} threads={args.threads} seed={args.seed} "
        f"repeats={args.repeats}"
    )
    packages = ["torch", "transformers", *(["trl"] if "trl" in arms else []), "lightning"]
    print(", ".join(f"{name} {version(name)}" for name in packages))
    print_table(best, arms)
    if args.repeats > 1:
        for arm in arms:
            print(
                f"{arm} tokens/s per repeat: " + ", ".join(f"{r['tokens_per_s']:.0f}" for r in summaries[arm])
            )
    busy = [arm for arm in arms if best[arm]["cpu_util"] < 0.8]
    if busy:
        print(
            f"\nWARNING: CPU util < 0.8 for {', '.join(busy)}: other processes took the cores, and torch's "
            "threads wait on each other at every op when one is descheduled. Rerun on an idle machine or "
            "with --threads 1."
        )
    report: dict[str, Any] = {"args": vars(args), "best": best, "runs": summaries, "raw": runs}
    if "trl" in arms:
        report["ratio"] = best["ours"]["tokens_per_s"] / best["trl"]["tokens_per_s"]
        identical = all(r.get("identical_to_ours") for r in runs["trl"])
        report["identical_to_ours"] = identical
        report["first_loss_match"] = first_losses_match(best["ours"], best["trl"], args.bf16)
        print(f"TRL input ids + labels identical to ours: {identical}")
        print(f"\nours/TRL = {report['ratio']:.2f}×")
    else:
        print(f"\nTRL arm skipped: {trl_missing()}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


def first_losses_match(ours: dict[str, Any], theirs: dict[str, Any], bf16: bool) -> bool:
    """Step 1 is the base model on the same batch (LoRA B starts at zero): both arms' mean losses must agree
    up to float summation order (and bf16 rounding under autocast)."""
    tolerance = 1e-3 if bf16 else 1e-5
    gap = abs(ours["first_loss"] - theirs["first_loss"])
    match = gap <= tolerance * max(1.0, abs(theirs["first_loss"]))
    print(
        f"first-step mean loss: ours {ours['first_loss']:.6f}, TRL {theirs['first_loss']:.6f}, "
        f"|difference| {gap:.2e}: {'match' if match else 'MISMATCH'}"
    )
    return match


def print_table(best: dict[str, dict[str, Any]], arms: list[str]) -> None:
    header = [
        "arm",
        "tokens/example",
        "target tokens",
        "timed steps",
        "non-pad tokens",
        "s/step",
        "tokens/s",
        "CPU util",
        "peak RSS in training (MiB)",
        "of which above pre-training RSS",
        "peak RSS process (MiB)",
        "first loss",
        "final loss",
    ]
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for arm in arms:
        r = best[arm]
        cells = [
            arm,
            f"{r['mean_len']:.1f}",
            str(r["target_tokens"]),
            str(r["steps"]),
            str(r["tokens"]),
            f"{r['s_per_step']:.3f}",
            f"{r['tokens_per_s']:.0f}",
            f"{r['cpu_util']:.2f}",
            f"{r['train_peak_mib']:.0f}",
            f"{r['train_delta_mib']:.0f}",
            f"{r['process_peak_mib']:.0f}",
            f"{r['first_loss']:.4f}",
            f"{r['final_loss']:.4f}",
        ]
        print("| " + " | ".join(cells) + " |")


# --smoke: the tiny random-weight model, 2 steps, one thread: the whole script in seconds (explicit flags win).
SMOKE = dict(model="tiny", steps=2, warmup=1, batch_size=2, max_length=128, threads=1, repeats=1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=["tiny", "smollm2-135m"], default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument(
        "--warmup", type=int, default=2, help="first steps left out of the timing (at least 1)"
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast in both arms (weights stay fp32)")
    parser.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads per arm"
    )
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="rounds of both arms, order alternating; the table shows each arm's best round",
    )
    parser.add_argument("--json", help="also write summaries and raw timings to this file")
    parser.add_argument("--smoke", action="store_true", help=f"a seconds-long run: {SMOKE}")
    parser.add_argument("--arm", choices=[*ARMS, "prime"], help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args = parser.parse_args(argv, namespace=argparse.Namespace(**SMOKE))
    if args.warmup < 1 or args.steps <= args.warmup:
        parser.error("need 1 <= --warmup < --steps")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.arm is not None:  # child process: one arm
        import torch

        torch.set_num_threads(args.threads)
        runner = {"ours": run_ours, "trl": run_trl, "prime": prime_model_cache}[args.arm]
        Path(args.result).write_text(json.dumps(runner(args)))
        return
    forward = [
        f"--model={args.model}",
        f"--steps={args.steps}",
        f"--warmup={args.warmup}",
        f"--batch-size={args.batch_size}",
        f"--max-length={args.max_length}",
        f"--lr={args.lr}",
        f"--threads={args.threads}",
        f"--seed={args.seed}",
        *(["--bf16"] if args.bf16 else []),
    ]
    if args.model != "tiny":
        run_arm("prime", args, forward)
    arms = ARMS if trl_missing() is None else ("ours",)
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for round_ in range(args.repeats):
        for arm in arms if round_ % 2 == 0 else tuple(reversed(arms)):
            print(f"round {round_ + 1}/{args.repeats}: {arm} (load avg {os.getloadavg()[0]:.2f})", flush=True)
            runs[arm].append(run_arm(arm, args, forward))
    report = print_report(args, runs)
    if not (report.get("identical_to_ours", True) and report.get("first_loss_match", True)):
        raise SystemExit("the arms did not train on the same thing (see above): the comparison does not hold")


if __name__ == "__main__":
    main()
