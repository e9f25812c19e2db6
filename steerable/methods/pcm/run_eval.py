"""PCM (Preference Control Model): frozen per-side LoRA experts merged token by token, with mixing weights from a
small controller that reads the preference description, the prompt and the partial reply (trained with REBEL)."""

from __future__ import annotations

from pathlib import Path

from steerable.methods.base import RunContext
from steerable.methods.benchmark import eval_stage as benchmark_eval_stage
from steerable.methods.benchmark import in_suite
from steerable.methods.pcm.config import PCMConfig
from steerable.methods.pcm.evaluate import run_pcm_eval
from steerable.methods.pcm.policy import CONTROLLER_DIR, Mixture, load_mixture
from steerable.methods.pcm.stages import pcm_prompts
from steerable.pipeline import StageResults, StageSummary
from steerable.report import Report


def eval_stage(ctx: RunContext, done: StageResults) -> StageSummary:
    if in_suite(ctx):  # an arm of a benchmark suite: the leaderboard's evaluator, on this run
        return benchmark_eval_stage(ctx, done)
    cfg, m = ctx.cfg, ctx.cfg.method
    experts_dir = Path(done.require("experts")["path"])
    trained = done.require("pcm")
    parts = load_mixture(experts_dir, ctx.run_dir / CONTROLLER_DIR, m, cfg.model)
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
    report.write(ctx.run_dir / "report.md")
    return result


def is_pcm_run(run: Path) -> bool:
    return (Path(run) / CONTROLLER_DIR / "controller.json").is_file()


def load_pcm(run: Path) -> tuple[Mixture, PCMConfig]:
    """The trained mixture and the method config of a finished PCM run."""
    from steerable.methods.base import run_config, run_model_config
    from steerable.pipeline import StageResults

    m = run_config(run, "method", PCMConfig)
    model_cfg = run_model_config(run)
    named = {m.experts} if m.experts else set()
    experts_dir = StageResults.finished(Path(run), ["experts"], named).artifact("experts")
    return load_mixture(experts_dir, Path(run) / CONTROLLER_DIR, m, model_cfg), m


def eval_pcm(cfg, out_dir: Path, report: Report) -> dict:
    """`steerable-eval run=<pcm run> eval=pcm`: the eval stage's comparison on the run's held-out prompts."""
    from steerable.config.schema import DataConfig
    from steerable.data.loaders import load_records, split_records
    from steerable.data.prompts import fitting_prompts
    from steerable.methods.base import run_config
    from steerable.policies.runs import run_rewards

    run = Path(cfg.run)
    if not is_pcm_run(run):
        raise ValueError(f"eval=pcm needs a finished method=pcm run; {run} has no {CONTROLLER_DIR}/")
    parts, m = load_pcm(run)
    data = run_config(run, "data", DataConfig)
    rewards = run_rewards(run, cfg.reward)
    _, val = split_records(load_records(data), data)
    budget = data.max_length - m.max_new_tokens - 16
    prompts = fitting_prompts(val, parts.tokenizer, budget, cfg.eval.num_prompts)
    return run_pcm_eval(parts, prompts, rewards, m, cfg.seed, out_dir, report)
