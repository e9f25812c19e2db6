"""Does the dial work? For each attribute, sweep its requested value over the range on held-out prompts (the
others at their defaults), then measure the replies with scorers that did not produce the labels' text:
the attribute model and, where one is configured under the attribute's name, a programmatic reward.

Shared by the `eval` stage of method=steerlm and by `steerable-eval eval=steerability`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from steerable.config.sampling import SamplingConfig
from steerable.evaluation.metrics import paired_bootstrap_ci, spearman, steerability, win_rate
from steerable.evaluation.plots import plot_dial_curves
from steerable.generation import Engine, GenerationSettings, settings_from
from steerable.methods.steerlm.attributes import AttributeSchema, steered_prompt
from steerable.report import Report
from steerable.rewards.base import RewardSource

Scorer = Callable[[list[list[dict]], list[str]], np.ndarray]  # (contexts, replies) -> [N] measurements


@dataclass
class SweepSettings:
    attributes: list[str]
    values: list[int]
    sampling: SamplingConfig  # greedy unless the eval's sampling says otherwise
    batch_size: int
    seed: int


def decoding(sampling: SamplingConfig, greedy: str = "greedy decoding") -> str:
    """How the replies were decoded, for the report (`greedy`: the words for greedy decoding there)."""
    if not sampling.do_sample:
        return greedy
    top_k = f", top-k {sampling.top_k}" if sampling.top_k else ""
    return f"sampling at temperature {sampling.temperature}, top-p {sampling.top_p}{top_k}"


@dataclass
class Steering:
    """What one steerability evaluation reads, whichever entry point built it (the eval stage or
    `steerable-eval eval=steerability`): the dials, the held-out prompts, the sweep, the scorers of each
    attribute, how to sample, and how many prompts' replies the report shows."""

    schema: AttributeSchema
    prompts: list[list[dict]]
    settings: SweepSettings
    scorers: dict[str, dict[str, Scorer]]
    engine: Engine = field(default_factory=Engine)
    autocast_factory: Callable[[], AbstractContextManager] = nullcontext
    show: int = 2


@dataclass
class DialSample:
    attribute: str
    value: int
    prompt_index: int
    text: str


def apm_scorers(annotator: Any, attributes: Sequence[str]) -> dict[str, dict[str, Scorer]]:
    """The attribute model measures every attribute it predicts (on the label scale)."""
    out: dict[str, dict[str, Scorer]] = {}
    for name in attributes:
        if name in annotator.meta.names:
            column = annotator.meta.names.index(name)
            out.setdefault(name, {})["attribute model"] = lambda c, r, j=column: annotator.raw(c, r)[:, j]
    return out


def reward_scorers(
    sources: dict[str, RewardSource], attributes: Sequence[str]
) -> dict[str, dict[str, Scorer]]:
    """A reward source named like an attribute measures it (reward=[verbosity] for the verbosity dial)."""
    out: dict[str, dict[str, Scorer]] = {}
    for name in attributes:
        if name in sources:
            source = sources[name]

            def score(contexts, replies, s=source):
                return s.score([c[-1]["content"] for c in contexts], replies)[:, 0].numpy()

            out.setdefault(name, {})[f"{name} ({source.measure})"] = score
    return out


def sweep(
    model,
    tokenizer,
    schema: AttributeSchema,
    prompts: list[list[dict]],
    settings: SweepSettings,
    engine: Engine,
    autocast,
) -> list[DialSample]:
    """Replies for every (attribute, value, prompt); other attributes at the schema's defaults."""
    cells = list(itertools.product(settings.attributes, settings.values, range(len(prompts))))
    texts = [
        steered_prompt(tokenizer, prompts[i], schema, schema.resolve({attribute: value}))
        for attribute, value, i in cells
    ]
    with autocast:
        completions = engine.sampler(model, tokenizer).generate(
            texts, settings_for(settings, [schema.label_start])
        )
    return [DialSample(a, v, i, c.text) for (a, v, i), c in zip(cells, completions, strict=True)]


def measure_dials(
    samples: list[DialSample],
    prompts: list[list[dict]],
    scorers: dict[str, dict[str, Scorer]],
    values: list[int],
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per attribute and scorer: the curve (mean, stderr per value) and steerability statistics."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for attribute, by_scorer in scorers.items():
        rows = [s for s in samples if s.attribute == attribute]
        if not rows:
            continue
        requested = np.array([s.value for s in rows], dtype=float)
        groups = np.array([s.prompt_index for s in rows])
        for scorer_name, scorer in by_scorer.items():
            measured = np.asarray(
                scorer([prompts[s.prompt_index] for s in rows], [s.text for s in rows]), float
            )
            means, errs = [], []
            for v in values:
                at = measured[requested == v]
                means.append(float(at.mean()))
                errs.append(float(at.std(ddof=1) / np.sqrt(at.size)) if at.size > 1 else 0.0)
            stats = steerability(requested, measured, groups)
            results.setdefault(attribute, {})[scorer_name] = {
                "values": list(values),
                "means": means,
                "stderrs": errs,
                "spearman": stats.spearman,
                "spearman_of_means": spearman(np.array(values, float), np.array(means)),
                "spread": stats.spread,
                "wrong_way_fraction": stats.wrong_way_fraction,
                "n": stats.n,
            }
    return results


def plot_dials(results: dict, out_dir: Path, schema: AttributeSchema) -> list[Path]:
    paths = []
    for attribute, by_scorer in results.items():
        for scorer_name, r in by_scorer.items():
            slug = scorer_name.split(" ")[0].replace("/", "_")
            name = f"dial_{attribute}" if slug == attribute else f"dial_{attribute}_{slug}"
            path = plot_dial_curves(
                {scorer_name: (r["values"], r["means"], r["stderrs"])},
                out_dir / f"{name}.png",
                title=f"{attribute} dial (Spearman {rho_text(r['spearman'])})",
                xlabel=f"requested {attribute} (label value, {schema.value_range[0]} to {schema.value_range[1]})",
                ylabel=f"measured by {scorer_name}",
                identity=scorer_name == "attribute model",
            )
            paths.append(path)
    return paths


def compare_with_baseline(
    steered: list[str],
    baseline: list[str],
    prompts: list[list[dict]],
    scorers: dict[str, dict[str, Scorer]],
    seed: int,
) -> list[dict[str, Any]]:
    """Each scorer's mean for the steered policy (defaults) and the unlabelled SFT baseline, plus the win rate."""
    rows = []
    for attribute, by_scorer in scorers.items():
        for scorer_name, scorer in by_scorer.items():
            a = np.asarray(scorer(prompts, steered), float)
            b = np.asarray(scorer(prompts, baseline), float)
            rate, low, high = paired_bootstrap_ci(a, b, stat=win_rate, n_boot=1000, seed=seed)
            rows.append(
                {
                    "attribute": attribute,
                    "scorer": scorer_name,
                    "steered_mean": float(a.mean()),
                    "baseline_mean": float(b.mean()),
                    "win_rate": rate,
                    "ci_low": low,
                    "ci_high": high,
                }
            )
    return rows


def rho_text(rho: float) -> str:
    """A correlation for a table: "n/a (constant)" where the measure did not vary (Spearman is undefined)."""
    return "n/a (constant)" if math.isnan(rho) else f"{rho:.4g}"


def write_steerability(
    report: Report,
    out_dir: Path,
    plot_dir: Path,
    results: dict,
    samples: list[DialSample],
    steering: Steering,
) -> None:
    """Tables, dial plots (in plot_dir) and a few replies along each dial, into `report` (written in out_dir)."""
    prompts, schema, show = steering.prompts, steering.schema, steering.show
    rows = [
        [
            a,
            s,
            rho_text(r["spearman"]),
            rho_text(r["spearman_of_means"]),
            r["spread"],
            r["wrong_way_fraction"],
            " / ".join(f"{m:.3g}" for m in r["means"]),
        ]
        for a, by in results.items()
        for s, r in by.items()
    ]
    report.section(
        "Steerability",
        f"Each attribute swept over {schema.values} with the others at their defaults {schema.defaults}; "
        f"{len(prompts)} held-out prompts, {decoding(steering.settings.sampling)}. Spearman is pooled over all "
        "replies (requested vs measured); spread is the per-prompt difference between the top and bottom value; "
        "wrong-way is the fraction of consecutive steps where the per-prompt mean moves against the dial.",
    )
    report.table(
        [
            "attribute",
            "measured by",
            "Spearman",
            "Spearman of means",
            "spread",
            "wrong-way",
            "mean per value",
        ],
        rows,
    )
    for path in plot_dials(results, plot_dir, schema):
        report.image(path, out_dir, path.stem)
    report.section("Replies along each dial", "The first held-out prompts; each row is one requested value.")
    for attribute in dict.fromkeys(s.attribute for s in samples):
        for i in range(min(show, len(prompts))):
            report.text(f"**{attribute}**, prompt: {_short(prompts[i][-1]['content'], 200)}")
            report.table(
                ["requested", "reply"],
                [
                    [s.value, _short(s.text, 400)]
                    for s in samples
                    if s.attribute == attribute and s.prompt_index == i
                ],
            )


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def settings_for(settings: SweepSettings, stop: list[str]) -> GenerationSettings:
    """The sweep's generation settings, with `stop` strings added to the sampling's own."""
    s = settings.sampling
    return settings_from(s, batch_size=settings.batch_size, stop=[*s.stop, *stop], seed=settings.seed)


def replies(
    model,
    tokenizer,
    prompts: list,
    settings: SweepSettings,
    engine: Engine,
    autocast,
    stop: list[str] | None = None,
) -> list[str]:
    gen = settings_for(settings, stop or [])
    with autocast:
        return [c.text for c in engine.sampler(model, tokenizer).generate(prompts, gen)]


def evaluate_steering(
    policy: tuple,
    steering: Steering,
    out_dir: Path,
    report: Report,
    *,
    plot_dir: Path | None = None,
    baseline: tuple | None = None,
) -> dict[str, Any]:
    """The sweep, its measurements and plots, and (when a baseline policy is given) quality against it.

    `report` is written in `out_dir`; plots go to `plot_dir` (default out_dir)."""
    model, tokenizer = policy
    s = steering
    samples = sweep(model, tokenizer, s.schema, s.prompts, s.settings, s.engine, s.autocast_factory())
    dials = measure_dials(samples, s.prompts, s.scorers, s.settings.values)
    write_steerability(report, out_dir, plot_dir or out_dir, dials, samples, s)
    result: dict[str, Any] = {"dials": dials, "prompts": len(s.prompts), "defaults": s.schema.defaults}
    if baseline is not None:
        result["baseline_comparison"] = against_baseline(policy, baseline, s, report)
    return result


def against_baseline(
    policy: tuple, baseline: tuple, steering: Steering, report: Report
) -> list[dict[str, Any]]:
    """The steered policy at its default values against the unlabelled SFT baseline, decoded alike on the same
    prompts: per-scorer means and win rates, reported with a few replies side by side."""
    model, tokenizer = policy
    schema, prompts, settings, engine = steering.schema, steering.prompts, steering.settings, steering.engine
    autocast_factory = steering.autocast_factory
    defaults = schema.resolve({})
    steered = replies(
        model,
        tokenizer,
        [steered_prompt(tokenizer, p, schema, defaults) for p in prompts],
        settings,
        engine,
        autocast_factory(),
        [schema.label_start],
    )
    plain = replies(*baseline, prompts, settings, engine, autocast_factory())
    rows = compare_with_baseline(steered, plain, prompts, steering.scorers, settings.seed)
    report.section(
        "Against the SFT baseline",
        f"The steered policy with its default values {defaults} against the same SFT recipe trained "
        f"without labels, on the same prompts ({decoding(settings.sampling, 'greedy')}). Win rate: share of prompts where "
        "the steered reply scores higher (ties half), 95% paired bootstrap interval.",
    )
    report.table(
        ["attribute", "measured by", "steered", "baseline", "win rate", "CI low", "CI high"],
        [
            [
                r["attribute"],
                r["scorer"],
                r["steered_mean"],
                r["baseline_mean"],
                r["win_rate"],
                r["ci_low"],
                r["ci_high"],
            ]
            for r in rows
        ],
    )
    report.table(
        ["prompt", "steered (defaults)", "SFT baseline"],
        [
            [_short(p[-1]["content"], 200), _short(a, 400), _short(b, 400)]
            for p, a, b in list(zip(prompts, steered, plain, strict=True))[: steering.show]
        ],
    )
    return rows
