"""PCM stages: `experts` (one LoRA expert per preference side, SFT on the data whose label is at that side's end),
`pcm` (the controller trained with REBEL on Bradley–Terry rewards against cached reference responses)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from peft import PeftModel
from safetensors.torch import save_file

from steerable.backbone.adapters import atomic_directory, load_named_adapters, save_model, wrap_lora
from steerable.backbone.loading import load_base_model, load_tokenizer
from steerable.config.schema import ConfigError
from steerable.data.loaders import load_records, split_records
from steerable.data.tokenize import tokenize_messages
from steerable.methods.base import FINAL_MODEL_DIR, RunContext, sub_context
from steerable.methods.benchmark import eval_stage as benchmark_eval_stage
from steerable.methods.benchmark import in_suite
from steerable.methods.fitting import fit_module, write_diagnostics
from steerable.methods.pcm.controller import PreferenceController
from steerable.methods.pcm.data import pcm_prompts, side_data
from steerable.methods.pcm.evaluate import run_pcm_eval
from steerable.methods.pcm.module import PCMModule
from steerable.methods.pcm.policy import CONTROLLER_DIR, Mixture, build_controller, load_experts, load_mixture
from steerable.methods.pcm.preferences import Dimension, combinations, parse_dimensions, sides
from steerable.methods.pcm.rewards import BTRewards
from steerable.methods.sft_recipe import fit_sft
from steerable.pipeline import StageResults, StageSummary
from steerable.report import Report
from steerable.run_dir import write_text_atomic
from steerable.training.lm_module import OptimSettings
from steerable.training.sampler import shuffled_loader

EXPERTS_DIR = "experts/final"

# --------------------------------------------------------------------------------------------- experts


def experts_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    """One SFT'd LoRA expert per side, then all of them as named adapters of one policy in experts/final."""
    cfg, m = ctx.cfg, ctx.cfg.method
    if m.experts:
        return {"path": str(Path(m.experts) / EXPERTS_DIR), "reused": True}
    dims = parse_dimensions(m.dimensions)
    tokenizer = load_tokenizer(cfg.model)
    train, val = split_records(load_records(cfg.data), cfg.data)
    summaries = {}
    for d in dims:
        for side, high in ((d.low, False), (d.high, True)):
            records, held_out = side_data(train, d.name, high, m), side_data(val, d.name, high, m)
            if not records:
                raise ConfigError(
                    f"method.dimensions: no training record of data={cfg.data.name} has {d.name} at the "
                    f"{'high' if high else 'low'} end for side {side!r}"
                )
            sub = sub_context(ctx, f"experts/{side}", replace(m, lr=m.expert_lr), m.expert_steps)
            if (sub.run_dir / FINAL_MODEL_DIR).is_dir():
                continue
            sub._backbone = (
                wrap_lora(load_base_model(cfg.model, tokenizer), cfg.model.lora, side),
                tokenizer,
            )
            encode = lambda rs: tokenize_messages(  # noqa: E731
                tokenizer, [r.messages for r in rs], cfg.data, cfg.model.end_of_turn
            )
            summaries[side] = fit_sft(sub, encode(records), encode(held_out), metadata={"side": side})
    model = combined_experts(ctx.run_dir, dims, cfg.model, tokenizer)
    meta = {"method": "pcm", "sides": sides(dims), "dimensions": list(m.dimensions)}
    save_model(model, tokenizer, ctx.run_dir / EXPERTS_DIR, metadata=meta)
    return {"path": str(ctx.run_dir / EXPERTS_DIR), "experts": summaries}


def combined_experts(run_dir: Path, dims: list[Dimension], model_cfg, tokenizer) -> PeftModel:
    folders = {side: run_dir / "experts" / side / FINAL_MODEL_DIR / side for side in sides(dims)}
    return load_named_adapters(load_base_model(model_cfg, tokenizer), folders)


# ------------------------------------------------------------------------------------------ controller


def save_controller(controller: PreferenceController, folder: Path, info: dict) -> None:
    trainable = {n: p.detach().contiguous() for n, p in controller.named_parameters() if p.requires_grad}
    with atomic_directory(folder) as tmp:
        save_file(trainable, str(tmp / "controller.safetensors"))
        (tmp / "controller.json").write_text(json.dumps(info, indent=2))


# ---------------------------------------------------------------------------------------- REBEL stage


DIAGNOSTICS = (
    "Per round: alpha_<side> is the controller's mean mixing weight on that side's expert over the reply tokens "
    "of the rows whose preference names it (uniform between the named experts at the start); reward_<side> is "
    "that side's Bradley-Terry term against the cached reference reply (0.5 = no better than the reference)."
)


def pcm_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    cfg, m = ctx.cfg, ctx.cfg.method
    dims = parse_dimensions(m.dimensions)
    missing = [d.name for d in dims if d.name not in cfg.reward]
    if missing:
        raise ConfigError(f"method.dimensions {missing} need reward sources of the same name: reward=[...]")
    experts, tokenizer, mixer = load_experts(done.artifact("experts"), cfg.model)
    train_prompts, _ = pcm_prompts(ctx, tokenizer)
    items = [
        (p, pref) for p in train_prompts for pref in combinations(dims)
    ]  # ξ uniform over all combinations
    controller = build_controller(m, cfg.model, tokenizer, len(sides(dims)), cfg.seed)
    sampler, loader = shuffled_loader(items, m.batch_size, seed=cfg.seed)
    optim = OptimSettings(m.lr, m.weight_decay, m.warmup_steps, m.scheduler, cfg.trainer.max_steps)
    parts = Mixture(experts, tokenizer, mixer, controller, dims)
    module = PCMModule(parts, BTRewards(cfg.reward, dims, m.bt_beta), m, optim, sampler)
    fit = fit_module(ctx, module, loader, None)
    info = {"num_experts": len(sides(dims)), "seed": cfg.seed, "kind": m.controller, "sides": sides(dims)}
    if fit.is_global_zero:
        save_controller(controller, ctx.run_dir / CONTROLLER_DIR, info)
        write_diagnostics(
            module.history, ctx.run_dir, f"{cfg.task_name}: PCM controller training", DIAGNOSTICS
        )
        references = json.dumps(module.rewards.reference)
        write_text_atomic(ctx.run_dir / CONTROLLER_DIR / "references.json", references)
    return {
        **fit.summary(),
        "steps": fit.steps // m.epochs,
        "optimizer_updates": fit.steps,
        "controller": str(ctx.run_dir / CONTROLLER_DIR),
        "items": len(items),
    }


def eval_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    if in_suite(ctx):  # an arm of a benchmark suite: the leaderboard's evaluator, on this run
        return benchmark_eval_stage(ctx, done)
    cfg, m = ctx.cfg, ctx.cfg.method
    experts_dir, trained = done.artifact("experts"), done.require("pcm")
    parts = load_mixture(experts_dir, done.artifact("pcm", "controller"), m, cfg.model)
    prompts = pcm_prompts(ctx, parts.tokenizer)[1][: m.eval.num_prompts]
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
    result = run_pcm_eval(parts, prompts, cfg.reward, m, cfg.seed, ctx.run_dir / "pcm", report)
    return {**result, "report": str(report.write(ctx.run_dir / "report.md"))}
