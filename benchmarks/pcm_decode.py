"""PCM decoding speed: the token-level mixture of 3 LoRA experts against the single base model and against running
the 3 experts one after another, same prompts and settings, in one process.

  base         HFSampler on the base model (adapters off): one model, batched, KV cache
  pcm          MixtureSampler: 3 experts as replicas of each row in one batched forward per step, one KV cache,
               weights from a (small, untrained) controller re-read every step, as in PCM inference
  sequential   the same mixture computed with a separate forward (and KV cache) per expert at every step
Sampling at temperature 1; each arm counts the tokens it returns (up to each reply's end of turn) per second. Prints a markdown table and pcm/base, pcm/sequential ratios (target: pcm >= 0.5x base).

  python benchmarks/pcm_decode.py                 # bundled SmolLM2-135M, 8 prompts x 48 tokens, bf16 autocast
  python benchmarks/pcm_decode.py --model tiny
  python benchmarks/pcm_decode.py --smoke         # seconds: tiny model, 2 prompts x 4 tokens (what the tests run)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from steerable.backbone.adapters import add_adapter, wrap_lora
from steerable.backbone.loading import load_base_model, load_tokenizer
from steerable.backbone.mixing import AdapterMixer
from steerable.config.schema import LoraConfig, ModelConfig, ModelSource
from steerable.data.demo import demo_prompts
from steerable.data.tokenize import pad_rows
from steerable.generation import GenerationSettings, HFSampler
from steerable.generation.hf import end_token_ids, render_prompt
from steerable.generation.logprobs import position_ids_from_mask
from steerable.generation.mixture import MixtureSampler, mix_log_probs
from steerable.hardware import cpu_capability, cpu_has_native_bf16
from steerable.methods.pcm.config import PCMConfig
from steerable.methods.pcm.policy import build_controller, controller_prefix
from steerable.report import markdown_table

SIDES = ["concise", "detailed", "friendly"]
# --smoke: the tiny random-weight model, 2 prompts x 4 tokens, one round: seconds (explicit flags win).
SMOKE = dict(model="tiny", prompts=2, max_new_tokens=4, batch_size=2, repeats=1)


def experts(cfg: ModelConfig):
    tokenizer = load_tokenizer(cfg)
    lora = LoraConfig(r=16, alpha=32, dropout=0.0)
    model = wrap_lora(load_base_model(cfg, tokenizer), lora, adapter_name=SIDES[0])
    for side in SIDES[1:]:
        add_adapter(model, side, lora)
    with torch.no_grad():  # non-zero updates, so every expert really differs from the base
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.01)
    model.eval()
    return model, tokenizer, AdapterMixer(model, SIDES)


def kept_tokens(rows: torch.Tensor, end_ids: list[int]) -> int:
    """Tokens up to and including each row's first end of turn (what the samplers return)."""
    total = 0
    for row in rows.tolist():
        total += next((i + 1 for i, t in enumerate(row) if t in end_ids), len(row))
    return total


def sequential_mixture(model, mixer, tokenizer, prompts, settings: GenerationSettings, weights_fn) -> int:
    """The mixture decoded with one forward per expert per step (n KV caches): what a naive PCM does."""
    n = len(mixer.names)
    end_ids = end_token_ids(model, tokenizer, None)
    generated_tokens = 0
    for start in range(0, len(prompts), settings.batch_size):
        rows = [
            tokenizer(render_prompt(tokenizer, p), add_special_tokens=False)["input_ids"]
            for p in prompts[start : start + settings.batch_size]
        ]
        ids, mask = pad_rows(rows, tokenizer.pad_token_id, side="left")
        b = len(rows)
        caches = [None] * n
        step_ids = [ids] * n
        positions = position_ids_from_mask(mask)
        generated = torch.zeros(b, 0, dtype=torch.long)
        for _ in range(settings.max_new_tokens):
            expert_lp = []
            for i in range(n):
                model.base_model.set_adapter(mixer.names[i])  # PEFT's single-adapter path for expert i
                one_hot = torch.nn.functional.one_hot(torch.full((b,), i), n).float()  # the mixer's hooks: x1
                with mixer.weighted(one_hot):
                    out = model(
                        input_ids=step_ids[i],
                        attention_mask=mask,
                        position_ids=positions,
                        past_key_values=caches[i],
                        use_cache=True,
                    )
                caches[i] = out.past_key_values
                expert_lp.append(out.logits[:, -1].float().log_softmax(-1))
            mixed = mix_log_probs(
                torch.stack(expert_lp, 1), weights_fn(list(range(start, start + b)), generated), "probability"
            )
            token = torch.multinomial(mixed.exp(), 1)
            generated = torch.cat([generated, token], 1)
            if all(any(t in end_ids for t in row) for row in generated.tolist()):
                break
            step_ids = [token] * n
            mask = torch.cat([mask, torch.ones(b, 1, dtype=mask.dtype)], 1)
            positions = positions[:, -1:] + 1
        generated_tokens += kept_tokens(generated, end_ids)
    model.base_model.set_adapter(mixer.names)
    return generated_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", choices=["smollm2-135m", "tiny"])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--fp32", action="store_true", help="no bf16 autocast (the default where the CPU has no native bf16)"
    )
    parser.add_argument("--smoke", action="store_true", help=f"a seconds-long run: {SMOKE}")
    args = parser.parse_args()
    if args.smoke:
        args = parser.parse_args(namespace=argparse.Namespace(**SMOKE))
    # bf16 only where the CPU computes it natively (AVX512_BF16 / AMX); emulated it is 25-39x slower
    use_bf16 = not args.fp32 and (torch.cuda.is_available() or cpu_has_native_bf16())
    print(f"CPU {cpu_capability()}, native bf16 {cpu_has_native_bf16()}: bf16 autocast {use_bf16}")
    cfg = ModelConfig(name=args.model, source=ModelSource["tiny" if args.model == "tiny" else "gguf"])
    model, tokenizer, mixer = experts(cfg)
    prompts = [p.messages for p in demo_prompts(args.prompts)]
    controller = build_controller(PCMConfig(), cfg, tokenizer, len(SIDES), seed=0).eval()
    prefixes = [controller_prefix(tokenizer, p, ("concise", "friendly")) for p in prompts]

    def weights_fn(indices: list[int], generated: torch.Tensor) -> torch.Tensor:
        """The controller on [preference; prompt; tokens so far], re-read every step as in PCM decoding."""
        rows = [prefixes[i] + generated[k].tolist() for k, i in enumerate(indices)]
        ids, mask = pad_rows(rows, tokenizer.pad_token_id, side="left")
        return controller(ids, mask)[:, -1].exp()

    never_stop = GenerationSettings(
        max_new_tokens=args.max_new_tokens, do_sample=True, batch_size=args.batch_size, seed=0
    )
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16)

    def base() -> int:
        out = HFSampler(model, tokenizer)
        with model.disable_adapter():
            completions = out.generate(prompts, never_stop)
        return sum(len(c.token_ids) for c in completions)

    def pcm() -> int:
        return sum(
            len(c.token_ids)
            for c in MixtureSampler(mixer, tokenizer).generate(prompts, never_stop, weights_fn)
        )

    def sequential() -> int:
        return sequential_mixture(model, mixer, tokenizer, prompts, never_stop, weights_fn)

    arms = {"base": base, "pcm": pcm, "sequential": sequential}
    best: dict[str, tuple[float, int]] = {}
    for round_index in range(args.repeats):
        for name in list(arms) if round_index % 2 == 0 else list(arms)[::-1]:
            torch.manual_seed(round_index)
            started = time.perf_counter()
            with torch.no_grad(), autocast:
                tokens = arms[name]()
            seconds = time.perf_counter() - started
            print(
                f"round {round_index + 1} {name}: {tokens} tokens in {seconds:.1f}s = {tokens / seconds:.1f} tokens/s"
            )
            if name not in best or tokens / seconds > best[name][1] / best[name][0]:
                best[name] = (seconds, tokens)
    rate = {name: t / s for name, (s, t) in best.items()}
    print()
    print(
        f"model={args.model}, {args.prompts} prompts x up to {args.max_new_tokens} tokens, batch {args.batch_size}, "
        f"3 experts (LoRA r=16, all linear layers), bf16={use_bf16}, threads={torch.get_num_threads()}, "
        f"best of {args.repeats} rounds"
    )
    print(
        markdown_table(
            ["arm", "seconds", "generated tokens", "tokens/s"],
            [[n, f"{best[n][0]:.1f}", best[n][1], f"{rate[n]:.1f}"] for n in arms],
        )
    )
    print(
        f"\npcm/base = {rate['pcm'] / rate['base']:.2f}x, pcm/sequential = {rate['pcm'] / rate['sequential']:.2f}x"
    )


if __name__ == "__main__":
    main()
