"""The method-neutral `steerable-eval` kinds: any policy's generations scored by reward sources, and its win
rate against a baseline policy. Both take `SteerablePolicy` objects (the CLI loads them from run folders), so
this library never imports a method; methods' own evaluations build on `eval_records` and `finish`."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steerable.config.schema import DataConfig, EvalConfig
from steerable.data.loaders import load_records, split_records
from steerable.data.records import prompt_of
from steerable.evaluation.meteor import mean_pairwise_meteor, wordnet_available
from steerable.evaluation.metrics import paired_bootstrap_ci, win_rate
from steerable.evaluation.plots import plot_pareto
from steerable.generation import GenerationSettings, settings_from
from steerable.policies.base import SteerablePolicy
from steerable.policies.runs import run_config
from steerable.report import Report
from steerable.rewards.base import RewardStack, build_reward_source
from steerable.run_dir import write_text_atomic

log = logging.getLogger(__name__)


def eval_records(cfg: EvalConfig) -> list:
    """The records to evaluate on; split=run takes the held-out split of the data the run was trained on."""
    data = run_config(Path(cfg.run), "data", DataConfig) if cfg.eval.split == "run" else cfg.data
    records = load_records(data)
    return list(records) if cfg.eval.split == "all" else split_records(records, data)[1]


def reward_stack(cfg: EvalConfig) -> RewardStack:
    return RewardStack({name: build_reward_source(spec) for name, spec in cfg.reward.items()})


def mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


# ---------------------------------------------------------------------------------------- generations


def _prompts(cfg: EvalConfig) -> list[list[dict[str, str]]]:
    return [prompt_of(r) for r in eval_records(cfg)[: cfg.eval.num_prompts]]


def _settings(cfg: EvalConfig) -> GenerationSettings:
    return settings_from(cfg.eval.sampling, batch_size=cfg.eval.batch_size, seed=cfg.seed)


def _texts(policy: SteerablePolicy, prompts: list[list[dict]], cfg: EvalConfig) -> list[str]:
    return [c.text for c in policy.generate(prompts, cfg.eval.controls, _settings(cfg))]


def _score(stack: RewardStack, prompts: list[list[dict]], texts: list[str]) -> torch.Tensor:
    return stack.score([p[-1]["content"] for p in prompts], texts)


def eval_generations(
    cfg: EvalConfig, policy: SteerablePolicy, out_dir: Path, report: Report
) -> dict[str, Any]:
    """Rewards, diversity and lengths of the policy's replies under `eval.controls`."""
    prompts = _prompts(cfg)
    completions = policy.generate(prompts, cfg.eval.controls, _settings(cfg))
    texts = [c.text for c in completions]
    stack = reward_stack(cfg)
    scores = _score(stack, prompts, texts).numpy()
    rewards = {
        name: dict(zip(("mean", "stderr"), mean_and_stderr(scores[:, j]), strict=True))
        for j, name in enumerate(stack.names)
    }
    similarity = mean_pairwise_meteor(texts, max_pairs=cfg.eval.meteor_pairs, seed=cfg.seed)
    lengths = np.array([len(c.token_ids) for c in completions], dtype=float)
    report.section(
        "Rewards",
        f"{len(texts)} prompts from {cfg.data.name} ({cfg.eval.split}), "
        f"max_new_tokens={cfg.eval.sampling.max_new_tokens}, greedy={not cfg.eval.sampling.do_sample}.",
    )
    report.table(
        ["reward (units)", "mean", "standard error"],
        [[stack.label(n), r["mean"], r["stderr"]] for n, r in rewards.items()],
    )
    report.section("Diversity").key_values(
        {
            "mean pairwise METEOR between completions to different prompts": similarity,
            "synonym matching (WordNet data present)": wordnet_available(),
            "mean completion length (tokens)": float(lengths.mean()),
        }
    )
    if len(stack.names) >= 2:
        plot = plot_pareto(
            {"completions": scores[:, :2]},
            out_dir / "rewards.png",
            labels=(stack.label(stack.names[0]), stack.label(stack.names[1])),
        )
        report.image(plot, out_dir, "rewards of each completion")
    _sample_table(report, cfg, prompts, texts, [stack.label(n) for n in stack.names], scores)
    _wandb_table(cfg, out_dir, prompts, texts, stack.names, scores)
    return {"rewards": rewards, "meteor_similarity": similarity, "mean_length": float(lengths.mean())}


def _sample_table(report: Report, cfg: EvalConfig, prompts, texts, names, scores) -> None:
    rows = [[p[-1]["content"], t, *scores[i]] for i, (p, t) in enumerate(zip(prompts, texts, strict=True))]
    report.section("Samples").table(["prompt", "completion", *names], rows[: cfg.eval.samples_in_report])


def _wandb_table(cfg: EvalConfig, out_dir: Path, prompts, texts, names, scores) -> None:
    """prompt / completion / scores as a W&B table when a W&B logger is selected."""
    if not cfg.logger.wandb:
        return
    import wandb

    with wandb_eval_run(cfg, out_dir) as run:
        table = wandb.Table(columns=["prompt", "completion", *names])
        for p, t, s in zip(prompts, texts, scores, strict=True):
            table.add_data(p[-1]["content"], t, *map(float, s))
        run.log({"eval/completions": table})


@contextmanager
def wandb_eval_run(cfg: EvalConfig, out_dir: Path) -> Iterator[Any]:
    """A W&B run for this evaluation while the block runs, when a W&B logger is selected (else None), so a
    `Report.write` inside it publishes its tables and figures."""
    if not cfg.logger.wandb:
        yield None
        return
    import wandb

    settings = cfg.logger.wandb_settings
    run = wandb.init(
        project=settings.project,
        entity=settings.entity,
        group=settings.group,
        job_type="eval",
        name=f"eval/{cfg.eval.name}/{out_dir.name}",
        dir=str(out_dir),
        mode="offline" if settings.offline else "online",
        config={"run": str(cfg.run)},
    )
    try:
        yield run
    finally:
        run.finish()


# ------------------------------------------------------------------------------------------- win rate


def eval_win_rate(
    cfg: EvalConfig, policy: SteerablePolicy, baseline: SteerablePolicy, out_dir: Path, report: Report
) -> dict[str, Any]:
    """How often the policy (under `eval.controls`) beats `baseline` (with its defaults) on the same prompts."""
    prompts = _prompts(cfg)
    ours = _texts(policy, prompts, cfg)
    theirs = [c.text for c in baseline.generate(prompts, {}, _settings(cfg))]
    stack = reward_stack(cfg)
    judge = cfg.eval.judge or stack.names[0]
    if judge not in stack.names:
        raise ValueError(f"eval.judge={judge!r} is not a reward column; columns: {stack.names}")
    column = stack.names.index(judge)
    a = _score(stack, prompts, ours).numpy()[:, column]
    b = _score(stack, prompts, theirs).numpy()[:, column]
    estimate, low, high = paired_bootstrap_ci(a, b, stat=win_rate, n_boot=cfg.eval.bootstrap, seed=cfg.seed)
    result = {
        "win_rate": estimate,
        "ci_low": low,
        "ci_high": high,
        "prompts": len(a),
        "judge": judge,
        "baseline": cfg.eval.baseline,
        "mean_score_run": float(a.mean()),
        "mean_score_baseline": float(b.mean()),
    }
    report.section(
        "Win rate",
        f"The run against `{cfg.eval.baseline}`, judged per prompt by `{judge}` "
        "(ties count half; a pointwise judge, so answer order cannot matter); "
        "95% paired bootstrap interval.",
    ).key_values(result)
    rows = [
        [p[-1]["content"], x, y, sa, sb] for p, x, y, sa, sb in zip(prompts, ours, theirs, a, b, strict=True)
    ]
    report.section("Samples").table(
        ["prompt", "run", "baseline", f"{judge} (run)", f"{judge} (baseline)"],
        rows[: cfg.eval.samples_in_report],
    )
    return result


def finish(result: dict[str, Any], report: Report, out_dir: Path) -> dict[str, Any]:
    """results.json and report.md, each written whole (a half-written result never looks complete)."""
    write_text_atomic(out_dir / "results.json", json.dumps(result, indent=2, sort_keys=True, default=str))
    report.write(out_dir / "report.md")
    return result
