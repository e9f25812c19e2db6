"""The multi-objective evaluation (clp_pcm.md §1.7): every arm on the same weight grid and held-out prompts;
per weighting the mean and standard error of each normalised reward and the KL to the reference; hypervolume
against the fixed reference point from calibration; steerability per objective; one Pareto plot of all arms."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steerable.backbone.adapters import count_parameters, reference_policy
from steerable.backbone.loading import load_tokenizer
from steerable.config.schema import DataConfig
from steerable.data.records import user_text
from steerable.evaluation.metrics import hypervolume, spearman, steerability
from steerable.evaluation.plots import plot_pareto
from steerable.generation import HFSampler, settings_from
from steerable.generation.hf import eval_mode
from steerable.generation.logprobs import (
    pack_completions,
    policy_and_reference_logprobs,
    sequence_logprobs,
)
from steerable.generation.mixture import MixtureSampler
from steerable.methods.base import run_config, run_model_config
from steerable.methods.clp.config import (
    CLPConfig,
    PolicyGradientConfig,
    RewardedSoupsConfig,
)
from steerable.methods.clp.data import prompt_split
from steerable.methods.clp.policy import load_steerable_policy
from steerable.methods.clp.rewards import FrozenRewards, load_rewards, read_calibration
from steerable.policies.runs import run_kind, run_rewards
from steerable.report import Report
from steerable.run_dir import write_text_atomic


def weight_grid(num_objectives: int, step: float) -> torch.Tensor:
    """Every point of the simplex whose coordinates are multiples of `step` (m=2, 0.1: 11 points)."""
    parts = round(1 / step)
    points = [c for c in itertools.product(range(parts + 1), repeat=num_objectives) if sum(c) == parts]
    return torch.tensor(sorted(points, reverse=True), dtype=torch.float32) / parts


@dataclass
class ArmResult:
    name: str
    means: np.ndarray  # [G, m] normalised reward means per grid point
    stderrs: np.ndarray
    kl: np.ndarray  # [G]
    scores: np.ndarray  # [G, P, m]
    texts: list[list[str]]  # [G][P]
    params: dict[str, int]


@dataclass
class ParetoSetup:
    """What every arm is evaluated on: the held-out prompts, the method config (its sampling and `eval`
    settings), the frozen rewards with the calibration they were frozen from, the seed and the autocast
    context generation runs under."""

    prompts: list[list[dict]]
    m: PolicyGradientConfig
    rewards: FrozenRewards
    calibration: dict
    seed: int
    autocast: Callable[[], AbstractContextManager] = nullcontext


def evaluate_arm(
    name: str, run_dir: Path, grid: torch.Tensor, setup: ParetoSetup, logit_mixing: bool = False
) -> ArmResult:
    """One arm on the grid. `logit_mixing`: decode from Σ w_i log p_i of the run's adapters (zero-shot logit
    mixing of single-reward policies) instead of mixing their parameters."""
    prompts, settings, rewards = setup.prompts, setup.m.eval, setup.rewards
    model, tokenizer, conditioning, meta = load_steerable_policy(run_dir)
    if meta["objectives"] != rewards.stack.names:
        raise ValueError(
            f"{run_dir} was trained on {meta['objectives']}, this evaluation uses {rewards.stack.names}"
        )
    cells = [(g, p) for g in range(len(grid)) for p in range(len(prompts))]
    weights = torch.stack([grid[g] for g, _ in cells])
    shown = [conditioning.prompt(prompts[p], grid[g]) for g, p in cells]
    gen = settings_from(settings.sampling, batch_size=settings.batch_size, seed=setup.seed)
    with setup.autocast():
        if logit_mixing:
            completions = MixtureSampler(conditioning.mixer, tokenizer, mode="logit").generate(
                shown, gen, weights
            )
            kl = _mixture_log_ratio(model, completions, tokenizer.pad_token_id or 0)
        else:
            completions = HFSampler(model, tokenizer).generate(
                shown, gen, row_context=conditioning.rows(weights)
            )
            kl = _log_ratio(model, completions, conditioning, weights, tokenizer.pad_token_id or 0)
        scores = rewards([user_text(prompts[p]) for _, p in cells], [c.text for c in completions])
    g, p = len(grid), len(prompts)
    per_cell = scores.numpy().reshape(g, p, -1)
    counts = count_parameters(model)
    return ArmResult(
        name=name,
        means=per_cell.mean(1),
        stderrs=per_cell.std(1, ddof=1) / np.sqrt(p) if p > 1 else np.zeros_like(per_cell.mean(1)),
        kl=kl.reshape(g, p).mean(1),
        scores=per_cell,
        texts=[[completions[i * p + j].text for j in range(p)] for i in range(g)],
        params={
            "adapter parameters (stored)": counts.total - _base_parameters(model),
            "adapters": len(meta["adapters"]),
            # model rows per generated token: adapters mixed in parameter space cost one; logit mixing one per adapter
            "forward rows per token": len(meta["conditioned"]) if logit_mixing else 1,
        },
    )


def _base_parameters(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)


def _log_ratio(model, completions, conditioning, weights: torch.Tensor, pad_id: int) -> np.ndarray:
    """Per completion, the summed log-ratio of its tokens: the conditioned policy against the reference."""
    out = []
    for start in range(0, len(completions), 16):
        chunk = completions[start : start + 16]
        ids, mask, response = pack_completions(chunk, pad_id)
        rows = weights[start : start + len(chunk)]
        with torch.no_grad(), eval_mode(model):
            policy, reference = policy_and_reference_logprobs(
                model,
                ids,
                mask,
                response,
                policy=lambda rows=rows: conditioning.forward(rows),
            )
        out.append((policy.sum(1) - reference.sum(1)).float().numpy())
    return np.concatenate(out)


def _mixture_log_ratio(model, completions, pad_id: int) -> np.ndarray:
    """Summed log-ratio of the mixture's sampled tokens (their log-probs come with the sample) to the reference."""
    out = []
    for start in range(0, len(completions), 16):
        chunk = completions[start : start + 16]
        ids, mask, response = pack_completions(chunk, pad_id)
        with torch.no_grad(), eval_mode(model), reference_policy(model):
            reference = sequence_logprobs(model, ids, mask, response).sum(1)
        mixture = torch.stack([c.logprobs.sum() for c in chunk])
        out.append((mixture - reference).float().numpy())
    return np.concatenate(out)


def arm_summary(
    arm: ArmResult, grid: torch.Tensor, reference: list[float], names: list[str]
) -> dict[str, Any]:
    g, p, _ = arm.scores.shape
    summary: dict[str, Any] = {
        "arm": arm.name,
        "hypervolume": hypervolume(arm.means, reference),
        "mean_kl": float(arm.kl.mean()),
        **arm.params,
    }
    for i, name in enumerate(names):
        requested = np.repeat(grid[:, i].numpy(), p)
        measured = arm.scores[:, :, i].reshape(-1)
        prompt_ids = np.tile(np.arange(p), g)
        result = steerability(requested, measured, groups=prompt_ids)
        summary[f"{name}: spearman"] = result.spearman
        summary[f"{name}: spearman of means"] = spearman(grid[:, i].numpy(), arm.means[:, i])
        summary[f"{name}: spread"] = result.spread
        summary[f"{name}: wrong-way"] = result.wrong_way_fraction
    return summary


def pareto_report(
    arms: list[ArmResult],
    grid: torch.Tensor,
    names: list[str],
    reference: list[float],
    out_dir: Path,
    report: Report,
) -> list[dict[str, Any]]:
    summaries = [arm_summary(a, grid, reference, names) for a in arms]
    report.section(
        "Pareto evaluation",
        f"{len(grid)} weightings (the same grid for every arm) x {arms[0].scores.shape[1]} held-out prompts; rewards "
        f"z-scored with the statistics frozen at calibration; hypervolume of the per-weighting means against the "
        f"fixed reference point {[round(r, 3) for r in reference]} (5th percentile of reference-policy samples). "
        "KL: mean summed log-ratio of the sampled tokens to the reference. Spearman: w_i against reward i over all "
        "samples; spread: reward i at w_i=1 minus at w_i=0 per prompt; wrong-way: adjacent grid steps moving "
        "against w_i.",
    )
    report.records(summaries)
    if len(names) >= 2:
        plot = plot_pareto(
            {a.name: a.means[:, :2] for a in arms},
            out_dir / "pareto.png",
            labels=(
                f"{names[0]} (z-score, calibration statistics)",
                f"{names[1]} (z-score, calibration statistics)",
            ),
            reference=reference[:2],
            title="Mean rewards over the weight grid",
        )
        report.image(plot, out_dir, "Pareto fronts")
    rows = []
    for a in arms:
        for gi, w in enumerate(grid.tolist()):
            rows.append([a.name, ", ".join(f"{x:.1f}" for x in w), *a.means[gi], a.kl[gi], a.texts[gi][0]])
    report.section("Per weighting", "Means per grid point, and the reply to the first held-out prompt.")
    report.table(["arm", "w", *[f"{n} (z-score)" for n in names], "KL (nats per reply)", "first reply"], rows)
    write_text_atomic(
        out_dir / "pareto.json",
        json.dumps(
            {
                "grid": grid.tolist(),
                "objectives": names,
                "reference_point": reference,
                "arms": [
                    {**s, "means": a.means.tolist(), "stderrs": a.stderrs.tolist(), "kl": a.kl.tolist()}
                    for s, a in zip(summaries, arms, strict=True)
                ],
            },
            indent=2,
            default=float,
        ),
    )
    return summaries


def arm_label(run_dir: Path) -> str:
    meta = json.loads((Path(run_dir) / "checkpoints" / "final" / "steerable.json").read_text())
    return "rewarded-soups" if meta["variant"] == "soup" else f"clp-{meta['variant']}"


def evaluate_runs(runs: list[Path], setup: ParetoSetup, out_dir: Path, report: Report) -> dict[str, Any]:
    """All arms on this run's grid, prompts and frozen reward statistics; pareto.png/json in `out_dir`."""
    names, m = setup.calibration["objectives"], setup.m
    grid = weight_grid(len(names), m.eval.grid_step)
    labels: dict[str, int] = {}
    arms = []
    for run in runs:
        label = arm_label(run)
        labels[label] = labels.get(label, 0) + 1
        name = label if labels[label] == 1 else f"{label} ({Path(run).name})"
        arms.append(evaluate_arm(name, Path(run), grid, setup))
        if label == "rewarded-soups" and m.eval.logit_mixing:
            mixing = "logit-mixing" if labels[label] == 1 else f"logit-mixing ({Path(run).name})"
            arms.append(evaluate_arm(mixing, Path(run), grid, setup, logit_mixing=True))
    summaries = pareto_report(arms, grid, names, setup.calibration["reference_point"], out_dir, report)
    return {"arms": summaries, "grid_points": len(grid), "prompts": len(setup.prompts)}


def eval_pareto(cfg, out_dir: Path, report: Report) -> dict:
    """`steerable-eval run=<clp or rewarded_soups run> eval=pareto`: the same evaluation as the run's eval stage."""
    run = Path(cfg.run)
    kind = run_kind(run)
    if kind not in ("clp", "rewarded_soups"):
        raise ValueError(f"eval=pareto needs a clp or rewarded_soups run; {run} is method={kind}")
    m = run_config(run, "method", RewardedSoupsConfig if kind == "rewarded_soups" else CLPConfig)
    data = run_config(run, "data", DataConfig)
    rewards = run_rewards(run, cfg.reward)
    calibration = read_calibration(run)
    prompts = prompt_split(m, data, load_tokenizer(run_model_config(run)))[1][: cfg.eval.num_prompts]
    setup = ParetoSetup(prompts, m, load_rewards(rewards, calibration), calibration, cfg.seed)
    return evaluate_runs([run, *map(Path, m.eval.compare)], setup, out_dir, report)
