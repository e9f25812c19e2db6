"""PCM against its baselines on held-out prompts under every composite preference (spec §2.6): the trained
controller, the uniform mixture (MPD-Uniform), logit mixing, preference prompting, and Personalized-Soups-style
parameter averaging of the experts (ΔW averaging, and the original code's averaging of A and B separately).
Judges are reward sources, one per dimension, each scoring a reply on its own, so the order of the two replies
cannot matter and "both orders" agree by construction; wins per dimension and overall (more dimensions won than
lost), with paired bootstrap intervals over prompts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steerable.backbone.adapters import reference_policy
from steerable.config.schema import DataConfig
from steerable.data.loaders import load_records, split_records
from steerable.data.prompts import fitting_prompts
from steerable.data.records import user_text
from steerable.evaluation.metrics import paired_bootstrap_ci, win_rate
from steerable.evaluation.plots import plot_series
from steerable.generation import GenerationSettings, HFSampler, settings_from
from steerable.generation.mixture import MixtureSampler
from steerable.methods.base import run_config, run_model_config
from steerable.methods.pcm.config import PCMConfig
from steerable.methods.pcm.policy import (
    CONTROLLER_DIR,
    Mixture,
    controller_prefix,
    controller_weights,
    load_mixture,
)
from steerable.methods.pcm.preferences import Dimension, active, combinations, describe, side_sign, sides
from steerable.methods.pcm.rewards import prompted
from steerable.pipeline import StageResults, named_artifacts
from steerable.policies.runs import run_rewards
from steerable.report import Report
from steerable.rewards.base import build_reward_source
from steerable.run_dir import write_text_atomic


def uniform_weights(items, dims: list[Dimension]) -> torch.Tensor:
    masks = torch.stack([active(pref, dims) for _, pref in items]).float()
    return masks / masks.sum(1, keepdim=True)


def averaged_factors(model, names: list[str], target: str = "factor_average") -> None:
    """Personalized Soups' released merge: A and B of the chosen experts averaged separately into `target`."""
    state = dict(model.named_parameters())
    with torch.no_grad():
        for name, param in state.items():
            if f".{target}." in name:
                param.copy_(
                    torch.stack([state[name.replace(f".{target}.", f".{n}.")] for n in names]).mean(0)
                )


def generate_arms(parts: Mixture, prompts, settings: GenerationSettings) -> dict[str, list]:
    """Replies per arm, in the order of `items` = every (prompt, preference)."""
    experts, tokenizer, mixer, dims = parts.experts, parts.tokenizer, parts.mixer, parts.dims
    items = [(p, pref) for p in prompts for pref in combinations(dims)]
    uniform = uniform_weights(items, dims)
    arms: dict[str, list[str]] = {}
    arms["pcm"] = [
        c.text
        for c in MixtureSampler(mixer, tokenizer).generate(
            [p for p, _ in items], settings, controller_weights(parts.controller, tokenizer, items, dims)
        )
    ]
    arms["uniform mixture"] = [
        c.text for c in MixtureSampler(mixer, tokenizer).generate([p for p, _ in items], settings, uniform)
    ]
    arms["logit mixing"] = [
        c.text
        for c in MixtureSampler(mixer, tokenizer, mode="logit").generate(
            [p for p, _ in items], settings, uniform
        )
    ]
    shown = [prompted(p, pref) for p, pref in items]
    with reference_policy(experts):
        arms["preference prompting"] = [
            c.text for c in HFSampler(experts, tokenizer).generate(shown, settings)
        ]

    def row_context(indices: list[int], n: int):
        return mixer.weighted(uniform[indices].repeat_interleave(n, 0))

    arms["parameter average (ΔW)"] = [
        c.text for c in HFSampler(experts, tokenizer).generate(shown, settings, row_context)
    ]
    arms["parameter average (A, B separately)"] = factor_average_replies(
        experts, tokenizer, mixer, dims, items, shown, settings
    )
    return {"items": items, **arms}


def factor_average_replies(experts, tokenizer, mixer, dims, items, shown, settings) -> list[str]:
    from steerable.backbone.adapters import add_adapter
    from steerable.config.schema import LoraConfig

    first = experts.peft_config[mixer.names[0]]
    if "factor_average" not in experts.peft_config:
        add_adapter(
            experts,
            "factor_average",
            LoraConfig(
                r=first.r, alpha=first.lora_alpha, dropout=0.0, target_modules=sorted(first.target_modules)
            ),
        )
    replies: list[str | None] = [None] * len(items)
    try:
        experts.base_model.set_adapter("factor_average")
        for pref in combinations(dims):
            averaged_factors(experts, list(pref))
            index = [i for i, (_, p) in enumerate(items) if p == pref]
            out = HFSampler(experts, tokenizer).generate([shown[i] for i in index], settings)
            for i, c in zip(index, out, strict=True):
                replies[i] = c.text
    finally:
        experts.base_model.set_adapter(mixer.names)
    return [r or "" for r in replies]


def side_scores(judges: dict, dims: list[Dimension], items, texts: list[str]) -> np.ndarray:
    """[N, D] sign-adjusted judge scores: higher = more of what the requested side of each dimension wants."""
    raw = {
        name: judge.score([user_text(p) for p, _ in items], texts)[:, 0].numpy()
        for name, judge in judges.items()
    }
    out = np.zeros((len(items), len(dims)))
    for k, (_, pref) in enumerate(items):
        for j, side in enumerate(pref):
            name, sign = side_sign(side, dims)
            out[k, j] = sign * raw[name][k]
    return out


def win_table(
    arms: dict, judges: dict, dims: list[Dimension], seed: int, bootstrap: int
) -> list[dict[str, Any]]:
    items = arms["items"]
    ours = side_scores(judges, dims, items, arms["pcm"])
    rows = []
    for name, texts in arms.items():
        if name in ("items", "pcm"):
            continue
        theirs = side_scores(judges, dims, items, texts)
        row: dict[str, Any] = {"pcm vs": name}
        for j, d in enumerate(dims):
            rate, low, high = paired_bootstrap_ci(
                ours[:, j], theirs[:, j], stat=win_rate, n_boot=bootstrap, seed=seed
            )
            row[f"{d.name}: win rate"] = rate
            row[f"{d.name}: 95% CI"] = f"{low:.2f}–{high:.2f}"
        overall_ours = np.sign(ours - theirs).sum(1)  # dimensions won minus lost, per reply
        rate, low, high = paired_bootstrap_ci(
            overall_ours, np.zeros_like(overall_ours), stat=win_rate, n_boot=bootstrap, seed=seed
        )
        row["overall win rate"], row["overall 95% CI"] = rate, f"{low:.2f}–{high:.2f}"
        rows.append(row)
    return rows


def weight_plot(parts: Mixture, prompt, preference, reply_ids: list[int], out_dir: Path) -> Path:
    controller, tokenizer, dims = parts.controller, parts.tokenizer, parts.dims
    prefix = controller_prefix(tokenizer, prompt, preference)
    ids = torch.tensor([prefix + reply_ids])
    with torch.no_grad():
        alpha = controller(ids, torch.ones_like(ids), active(preference, dims)[None]).exp()[0]
    steps = np.arange(len(reply_ids))
    series = {
        side: alpha[len(prefix) - 1 + steps, i].numpy()
        for i, side in enumerate(sides(dims))
        if side in preference
    }
    return plot_series(
        steps,
        series,
        out_dir / "weights_along_reply.png",
        "reply token (position)",
        "expert weight (mixing probability, 0 to 1)",
        f"{describe(preference)}: {user_text(prompt)[:50]}",
    )


def run_pcm_eval(parts: Mixture, prompts, rewards: dict, m, seed, out_dir: Path, report: Report) -> dict:
    tokenizer, dims = parts.tokenizer, parts.dims
    settings = settings_from(m.eval.sampling, batch_size=16, seed=seed)
    arms = generate_arms(parts, prompts, settings)
    judges = {d.name: build_reward_source(rewards[d.name]) for d in dims}
    rows = win_table(arms, judges, dims, seed, m.eval.bootstrap)
    items = arms["items"]
    report.section(
        "Win rates of the trained controller",
        f"{len(prompts)} held-out prompts x {len(combinations(dims))} composite preferences = {len(items)} replies per "
        "arm, sampled with the same settings and seed. Judge per dimension: its reward source, sign-adjusted to the "
        "requested side; pointwise, so both answer orders give the same verdict. Ties count half; 95% paired "
        "bootstrap intervals over replies. Overall: more requested dimensions won than lost.",
    )
    report.records(rows)
    means = {
        name: side_scores(judges, dims, items, texts).mean(0).tolist()
        for name, texts in arms.items()
        if name != "items"
    }
    report.section(
        "Mean sign-adjusted judge score per arm",
        "Each dimension's reward source in its own units (see the rewards' names), sign-flipped where the "
        "request asked for the low side, so higher is always better.",
    ).table(["arm", *[d.name for d in dims]], [[name, *v] for name, v in means.items()])
    first_prompt, first_pref = items[0]
    reply = tokenizer(arms["pcm"][0], add_special_tokens=False)["input_ids"]
    if reply:
        plot = weight_plot(parts, first_prompt, first_pref, reply, out_dir)
        report.image(plot, out_dir, "controller weights along a reply")
    report.section("Samples").table(
        ["prompt", "preference", *[k for k in arms if k != "items"]],
        [
            [user_text(p), ", ".join(pref), *[arms[k][i] for k in arms if k != "items"]]
            for i, (p, pref) in enumerate(items[:4])
        ],
    )
    result = {"win_rates": rows, "mean_scores": means, "replies": len(items)}
    write_text_atomic(out_dir / "results.json", json.dumps(result, indent=2, default=float))
    return result


def is_pcm_run(run: Path) -> bool:
    return (Path(run) / CONTROLLER_DIR / "controller.json").is_file()


def load_pcm(run: Path) -> tuple[Mixture, PCMConfig]:
    """The trained mixture and the method config of a finished PCM run."""

    m = run_config(run, "method", PCMConfig)
    model_cfg = run_model_config(run)
    experts_dir = StageResults.finished(Path(run), ["experts"], named_artifacts(m)).artifact("experts")
    return load_mixture(experts_dir, Path(run) / CONTROLLER_DIR, m, model_cfg), m


def eval_pcm(cfg, out_dir: Path, report: Report) -> dict:
    """`steerable-eval run=<pcm run> eval=pcm`: the eval stage's comparison on the run's held-out prompts."""
    from steerable.methods.base import run_config

    run = Path(cfg.run)
    if not is_pcm_run(run):
        raise ValueError(f"eval=pcm needs a finished method=pcm run; {run} has no {CONTROLLER_DIR}/")
    parts, m = load_pcm(run)
    data = run_config(run, "data", DataConfig)
    rewards = run_rewards(run, cfg.reward)
    _, val = split_records(load_records(data), data)
    budget = data.max_length - m.sampling.max_new_tokens - 16
    prompts = fitting_prompts(val, parts.tokenizer, budget, cfg.eval.num_prompts)
    return run_pcm_eval(parts, prompts, rewards, m, cfg.seed, out_dir, report)
