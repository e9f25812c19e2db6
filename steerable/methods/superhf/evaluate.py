"""Did SuperHF help, and at what price? The trained policy against the initial policy, best-of-n sampling from
it, and any baseline runs (e.g. FeedME SFT), on the same held-out prompts: gold reward (the RM trained on the
other half of the pairs), train reward, KL to the initial policy, METEOR similarity between completions to
different prompts (mode collapse / reward hacking), win rate against the initial policy; plus the run's reward
curves and, for a sweep folder, the reward-vs-similarity trade-off across KL coefficients."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats
import torch

from steerable.backbone.adapters import reference_policy
from steerable.config.schema import DataConfig, ModelConfig
from steerable.data.records import user_text
from steerable.evaluation.meteor import mean_pairwise_meteor
from steerable.evaluation.metrics import paired_bootstrap_ci, win_rate
from steerable.evaluation.plots import plot_pareto, plot_series
from steerable.generation import Engine
from steerable.generation.logprobs import pack_completions, sequence_logprobs
from steerable.hardware import inference_autocast
from steerable.methods.base import run_config
from steerable.methods.superhf.config import SuperHFConfig
from steerable.methods.superhf.data import prompt_split, sampling
from steerable.methods.superhf.module import Scorer, trim_completion
from steerable.methods.superhf.rewards import run_scorers
from steerable.policies.plain import load_run_model
from steerable.policies.runs import is_run_folder, run_kind, run_rewards
from steerable.report import Report
from steerable.run_dir import write_text_atomic

log = logging.getLogger(__name__)


@dataclass
class Arm:
    name: str
    texts: list[str]
    gold: np.ndarray
    train: np.ndarray
    lengths: np.ndarray
    kl: float | None = None  # mean summed log-ratio to the initial policy on the arm's own samples
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalSetup:
    """What the held-out comparison runs on: the run's method, data and reward configs, how many held-out
    prompts, the seed, the scorers' device, the sampler recipe and the autocast context generation runs under."""

    m: SuperHFConfig
    data: DataConfig
    rewards: dict
    num_prompts: int
    seed: int
    device: str = "cpu"
    engine: Engine = field(default_factory=Engine)
    autocast: Callable = nullcontext


def _sample(model, tokenizer, prompts, setup: EvalSetup, n: int, seed: int):
    m = setup.m
    completions = setup.engine.sampler(model, tokenizer).generate(prompts, sampling(m, n, seed))
    return completions, [trim_completion(c.text) if m.trim else c.text.strip() for c in completions]


def sample_kl(model, completions) -> float:
    """Monte-Carlo KL(policy || initial): mean over samples of the summed log-ratio of their tokens."""
    kept = [c for c in completions if c.token_ids]
    if not kept:
        return float("nan")
    device = next(model.parameters()).device
    ids, mask, response = (t.to(device) for t in pack_completions(kept, pad_token_id=0))
    with torch.no_grad():
        policy = sequence_logprobs(model, ids, mask, response).sum(-1)
        with reference_policy(model):
            initial = sequence_logprobs(model, ids, mask, response).sum(-1)
    return float((policy - initial).mean())


def compare(
    model,
    tokenizer,
    setup: EvalSetup,
    prompts: list[list[dict]],
    train: Scorer,
    gold: Scorer,
    baselines: dict[str, Callable[[], tuple[Any, Any]]],
) -> list[Arm]:
    users = [user_text(p) for p in prompts]

    def arm(name: str, texts: list[str], lengths: list[int], kl: float | None = None) -> Arm:
        return Arm(
            name, texts, np.array(gold(users, texts)), np.array(train(users, texts)), np.array(lengths), kl
        )

    m, seed = setup.m, setup.seed
    arms = []
    with setup.autocast():
        completions, texts = _sample(model, tokenizer, prompts, setup, 1, seed)
        arms.append(
            arm("superhf", texts, [len(c.token_ids) for c in completions], sample_kl(model, completions))
        )
        with reference_policy(model):
            completions, texts = _sample(model, tokenizer, prompts, setup, 1, seed)
            arms.append(arm("initial", texts, [len(c.token_ids) for c in completions], 0.0))
            many, many_texts = _sample(model, tokenizer, prompts, setup, m.best_of_n, seed + 1)
        scores = np.array(train([users[c.prompt_index] for c in many], many_texts)).reshape(len(prompts), -1)
        best = scores.argmax(1) + np.arange(len(prompts)) * m.best_of_n
        arms.append(
            arm(
                f"best-of-{m.best_of_n} (initial)",
                [many_texts[i] for i in best],
                [len(many[i].token_ids) for i in best],
            )
        )
        for name, load in baselines.items():
            other, other_tokenizer = load()
            completions, texts = _sample(other, other_tokenizer, prompts, setup, 1, seed)
            arms.append(arm(name, texts, [len(c.token_ids) for c in completions]))
    return arms


def arm_rows(arms: list[Arm], seed: int, bootstrap: int = 2000) -> list[dict[str, Any]]:
    initial = next(a for a in arms if a.name == "initial")
    rows = []
    for a in arms:
        n = len(a.gold)
        rate, low, high = paired_bootstrap_ci(
            a.gold, initial.gold, stat=win_rate, n_boot=bootstrap, seed=seed
        )
        rows.append(
            {
                "arm": a.name,
                "gold_reward": float(a.gold.mean()),
                "gold_stderr": float(a.gold.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
                "train_reward": float(a.train.mean()),
                "train_stderr": float(a.train.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
                "win_rate_vs_initial": rate,
                "win_ci": [low, high],
                "kl_to_initial": a.kl,
                "meteor_similarity": mean_pairwise_meteor(a.texts, max_pairs=300, seed=seed),
                "mean_tokens": float(a.lengths.mean()),
            }
        )
    return rows


def report_comparison(report: Report, rows: list[dict], arms: list[Arm], prompts, samples: int) -> None:
    report.section(
        "Policies on held-out prompts",
        f"{len(prompts)} prompts, one sampled completion each (best-of-n: the train reward's pick of n). Gold = "
        "the held-out reward model; win rate against the initial policy by gold reward (ties half, 95% paired "
        "bootstrap). KL: mean summed log-ratio to the initial policy on the arm's own samples. METEOR: mean "
        "similarity between completions to different prompts (higher = more alike = mode collapse).",
    )
    report.table(
        [
            "arm",
            "gold reward (RM units)",
            "± se",
            "train reward (RM units)",
            "± se",
            "win rate vs initial (0 to 1)",
            "95% CI",
            "KL (nats per reply)",
            "METEOR (0 to 1)",
            "tokens per reply",
        ],
        [
            [
                r["arm"],
                r["gold_reward"],
                r["gold_stderr"],
                r["train_reward"],
                r["train_stderr"],
                r["win_rate_vs_initial"],
                f"{r['win_ci'][0]:.2f}–{r['win_ci'][1]:.2f}",
                "" if r["kl_to_initial"] is None else r["kl_to_initial"],
                r["meteor_similarity"],
                r["mean_tokens"],
            ]
            for r in rows
        ],
    )
    report.section("Samples", "Held-out prompts with each arm's completion and its gold reward.")
    header = ["prompt", *[a.name for a in arms]]
    body = [
        [user_text(prompts[i]), *[f"{a.texts[i]} (gold {a.gold[i]:.2f})" for a in arms]]
        for i in range(min(samples, len(prompts)))
    ]
    report.table(header, body)


# ---------------------------------------------------------------------------------------------- curves


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def series(rows: list[dict[str, str]], key: str) -> tuple[np.ndarray, np.ndarray]:
    points = [(float(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
    if not points:
        return np.array([]), np.array([])
    x, y = zip(*points, strict=True)
    return np.array(x), np.array(y)


def reward_trend(rows: list[dict[str, str]], key: str = "train/reward_all", parts: int = 4) -> dict[str, Any]:
    """Did the policy's sample reward rise? Each superbatch draws new prompts, so single points are noisy:
    report means of consecutive parts of the run and the least-squares slope with its standard error."""
    x, y = series(rows, key)
    if len(x) < 3:
        return {}
    fit = scipy.stats.linregress(x, y)
    chunks = [c for c in np.array_split(np.arange(len(y)), parts) if len(c)]
    return {
        "key": key,
        "points": len(y),
        "slope_per_step": float(fit.slope),
        "slope_stderr": float(fit.stderr),
        "slope_p_value": float(fit.pvalue),
        "part_means": [float(y[c].mean()) for c in chunks],
        "part_stderrs": [float(y[c].std(ddof=1) / np.sqrt(len(c))) if len(c) > 1 else 0.0 for c in chunks],
    }


def report_trend(report: Report, trend: dict[str, Any]) -> None:
    if not trend:
        return
    report.section(
        "Train reward trend",
        f"{trend['key']} over {trend['points']} superbatches: slope {trend['slope_per_step']:+.4f} per step "
        f"(± {trend['slope_stderr']:.4f}, p = {trend['slope_p_value']:.3f}).",
    )
    report.table(
        ["part of the run", "mean reward (RM units)", "± se"],
        [
            [f"{i + 1}/{len(trend['part_means'])}", mean, se]
            for i, (mean, se) in enumerate(zip(trend["part_means"], trend["part_stderrs"], strict=True))
        ],
    )


def plot_curves(run_dir: Path, out_dir: Path, report: Report) -> None:
    rows = read_metrics(run_dir)
    groups = (
        (
            "train_reward",
            ("train/reward_all", "train/reward_kept"),
            "reward-model score per superbatch (RM units)",
        ),
        ("heldout_reward", ("eval/train_reward", "eval/gold_reward"), "held-out reward (RM units)"),
        ("kl", ("train/kl",), "KL to the initial policy (nats per token)"),
        ("similarity", ("train/meteor_similarity",), "METEOR similarity of kept completions (0 to 1)"),
    )
    for name, keys, ylabel in groups:
        found = {key: series(rows, key) for key in keys}
        found = {k: v for k, v in found.items() if len(v[0])}
        if not found:
            continue
        x = next(iter(found.values()))[0]
        ys = {k: y for k, (kx, y) in found.items() if np.array_equal(kx, x)}
        path = plot_series(x, ys, out_dir / f"{name}.png", "optimizer step", ylabel)
        report.image(path, out_dir, ylabel)


# ----------------------------------------------------------------------------------------------- sweep


def sweep_runs(folder: Path) -> list[Path]:
    """SuperHF runs inside a multirun folder (its job folders whose method is superhf)."""
    return [c for c in sorted(Path(folder).iterdir()) if is_run_folder(c) and run_kind(c) == "superhf"]


def trade_off(runs: list[Path], out_dir: Path, report: Report) -> list[dict[str, Any]]:
    """Gold reward vs METEOR similarity per run of a KL sweep (the paper's trade-off), from each run's eval."""
    points = []
    for run in runs:
        results = run / "superhf" / "results.json"
        if not results.is_file():
            log.warning(
                "%s has no superhf/results.json (run its eval stage); left out of the sweep plot", run
            )
            continue
        arms = {r["arm"]: r for r in json.loads(results.read_text())["arms"]}
        kl_coef = run_config(run, "method", SuperHFConfig).kl_coef
        ours = arms["superhf"]
        points.append(
            {
                "run": str(run),
                "kl_coef": kl_coef,
                "gold_reward": ours["gold_reward"],
                "meteor_similarity": ours["meteor_similarity"],
                "kl_to_initial": ours["kl_to_initial"],
            }
        )
    if points:
        plot = plot_pareto(
            {f"kl_coef={p['kl_coef']}": [[-p["meteor_similarity"], p["gold_reward"]]] for p in points},
            out_dir / "kl_tradeoff.png",
            labels=("- METEOR similarity (0 to 1; higher = more diverse)", "gold reward (RM units)"),
            title="SuperHF: reward vs diversity across KL coefficients",
        )
        report.section(
            "KL-coefficient sweep", "One point per run: its trained policy on the same held-out prompts."
        )
        report.table(
            [
                "kl_coef",
                "gold reward (RM units)",
                "METEOR similarity (0 to 1)",
                "KL to initial (nats per reply)",
                "run",
            ],
            [
                [p["kl_coef"], p["gold_reward"], p["meteor_similarity"], p["kl_to_initial"], p["run"]]
                for p in points
            ],
        )
        report.image(plot, out_dir, "reward vs similarity")
    return points


# ----------------------------------------------------------------------------------------------- entry


def run_evaluation(
    model, tokenizer, setup: EvalSetup, *, run_dir: Path, out_dir: Path, report: Report
) -> dict[str, Any]:
    """The comparison table, samples and the run's curves; results.json in `out_dir`."""
    m, seed = setup.m, setup.seed
    train, gold = run_scorers(m, setup.rewards, setup.device)
    judge = "gold reward"
    if gold is None:
        judge = "train reward (no method.gold_reward: reward hacking cannot be measured)"
        gold = train
    _, held_out = prompt_split(m, setup.data, tokenizer)
    prompts = held_out[: setup.num_prompts]
    baselines = {f"baseline: {Path(b).name}": (lambda b=b: load_run_model(Path(b))) for b in m.baselines}
    arms = compare(model, tokenizer, setup, prompts, train, gold, baselines)
    rows = arm_rows(arms, seed)
    report.section("Judge", f"Gold column = {judge}.")
    report_comparison(report, rows, arms, prompts, samples=6)
    trend = reward_trend(read_metrics(run_dir))
    report_trend(report, trend)
    report.section("Training curves", "From the run's metrics.csv (x = optimizer step).")
    plot_curves(run_dir, out_dir, report)
    result = {"arms": rows, "prompts": len(prompts), "judge": judge, "train_reward_trend": trend}
    write_text_atomic(out_dir / "results.json", json.dumps(result, indent=2, default=str))
    return result


def eval_superhf(cfg, out_dir: Path, report: Report) -> dict[str, Any]:
    """`steerable-eval eval=superhf`: one SuperHF run, or a multirun folder of them (the KL sweep)."""
    run = Path(cfg.run)
    if not is_run_folder(run):
        runs = sweep_runs(run)
        if not runs:
            raise FileNotFoundError(f"{run} is neither a SuperHF run folder nor a multirun folder of them")
        return {"sweep": trade_off(runs, out_dir, report)}
    m = run_config(run, "method", SuperHFConfig)
    data = run_config(run, "data", DataConfig)
    rewards = run_rewards(run, cfg.reward)
    model, tokenizer = load_run_model(run)
    gpu = cfg.hardware.accelerator == "gpu" and torch.cuda.is_available()
    model.to("cuda" if gpu else "cpu")
    autocast = partial(inference_autocast, cfg.hardware)
    setup = EvalSetup(
        m,
        data,
        rewards,
        num_prompts=cfg.eval.num_prompts,
        seed=cfg.seed,
        device="cuda" if gpu else "cpu",
        engine=Engine(run_config(run, "model", ModelConfig).end_of_turn, cfg.generation),
        autocast=autocast,
    )
    return run_evaluation(model, tokenizer, setup, run_dir=run, out_dir=out_dir, report=report)
