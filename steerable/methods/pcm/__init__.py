"""PCM (Preference Control Model): frozen per-side LoRA experts merged token by token, with mixing weights from a
small controller that reads the preference description, the prompt and the partial reply (trained with REBEL)."""

from __future__ import annotations

from pathlib import Path

from steerable.methods.base import RunContext
from steerable.methods.pcm.evaluate import run_pcm_eval
from steerable.methods.pcm.preferences import parse_dimensions
from steerable.methods.pcm.stages import (
    CONTROLLER_DIR,
    experts_stage,
    load_controller,
    load_experts,
    pcm_prompts,
    pcm_stage,
)
from steerable.report import Report


def eval_stage(ctx: RunContext, done) -> dict:
    cfg, m = ctx.cfg, ctx.cfg.method
    experts_dir = Path(done.require("experts")["path"])
    trained = done.require("pcm")
    experts, tokenizer, mixer = load_experts(experts_dir, cfg.model)
    controller = load_controller(ctx.run_dir / CONTROLLER_DIR, m, cfg.model, tokenizer)
    dims = parse_dimensions(m.dimensions)
    prompts = pcm_prompts(ctx, tokenizer)[1][: m.eval.num_prompts]
    report = Report(f"{cfg.task_name}: PCM on {cfg.model.name} / {cfg.data.name}")
    report.section("Setup").key_values(
        {
            "run folder": ctx.run_dir,
            "dimensions": ", ".join(m.dimensions),
            "experts": f"{experts_dir} (one LoRA per side, SFT on the data at that side's end)",
            "controller": f"{m.controller} ({trained.get('trainable_params')} trainable parameters)",
            "REBEL": f"{trained.get('steps')} steps x {m.batch_size} (prompt, preference) pairs x 2 replies, "
            f"{m.epochs} epochs each, eta {m.eta}",
            "training time (s)": trained.get("fit_seconds"),
        }
    )
    result = run_pcm_eval(
        experts,
        tokenizer,
        mixer,
        controller,
        dims,
        prompts,
        cfg.reward,
        m,
        cfg.seed,
        ctx.run_dir / "pcm",
        report,
    )
    report.write(ctx.run_dir / "report.md")
    return result


def build_stages(ctx: RunContext) -> dict:
    return {
        "experts": lambda done: experts_stage(ctx, done),
        "pcm": lambda done: pcm_stage(ctx, done),
        "eval": lambda done: eval_stage(ctx, done),
    }
