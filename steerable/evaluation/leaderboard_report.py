"""The leaderboard's outputs: leaderboard.md (steering, reward and cost tables sorted by hypervolume, with
bootstrap intervals, and each arm's exact training command), front.png, dial_<objective>.png, and the report
that `Report.write` also publishes to an active W&B run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from steerable.config.benchmark import BenchmarkConfig
from steerable.evaluation.plots import plot_dial_curves, plot_pareto
from steerable.evaluation.steering import Interval, requested
from steerable.report import Report, markdown_table
from steerable.run_dir import write_text_atomic

NA = "n/a"


def cell(value: Interval | float | None) -> str:
    if value is None:
        return NA
    if isinstance(value, Interval):
        return str(value)
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def write_leaderboard(suite: BenchmarkConfig, rows: list, costs: dict, out_dir: Path, report: Report) -> dict:
    names = list(suite.objectives)
    report.section(
        f"Leaderboard: {suite.name}",
        f"{len(rows)} rows, sorted by hypervolume (reference {list(suite.reference)} on {names}). Every arm "
        f"answered the same {len(_grid(rows))} requests (weights on a {suite.grid_step} simplex grid) on the same "
        f"{rows[0].answers.cells[0].scores.shape[0] if rows else 0} held-out prompts; brackets: bootstrap 95% "
        "interval over prompts (and over seeds, for an arm trained on several: its row is the mean of its seeds). "
        "n/a: not defined for the row (a fixed policy has no dial).",
    )
    tables = [steering_table(rows, names), reward_table(rows, names), cost_table(rows, costs, suite)]
    if any(r.per_seed for r in rows):
        tables.insert(1, seed_table(rows, names))
    for heading, header, body in tables:
        report.section(heading).table(header, body)
    report.section("Training commands").text(commands(rows))
    missing = [arm for arm in suite.arms if arm not in {r.arm.name for r in rows}]
    if missing:
        report.section("Arms without a run", ", ".join(missing))
    figures(suite, rows, out_dir, report)
    text = [f"# Leaderboard: {suite.name}\n"]
    text += [f"## {heading}\n\n{markdown_table(header, body)}\n" for heading, header, body in tables]
    text.append(f"## Training commands\n\n{commands(rows)}\n")
    if missing:
        text.append(f"## Arms without a run\n\n{', '.join(missing)}\n")
    write_text_atomic(out_dir / "leaderboard.md", "\n".join(text))
    return {"suite": suite.name, "rows": [row_result(r, costs, names) for r in rows]}


def _grid(rows: list) -> set:
    return {tuple(sorted(c.weights.items())) for r in rows for c in r.answers.cells if c.weights}


def steering_table(rows: list, names: list[str]) -> tuple[str, list[str], list[list[str]]]:
    header = ["rank", "arm", "hypervolume", "points", "seeds"]
    for kind in ("rho_means", "rho_replies", "monotone", "spread"):
        header += [f"{kind} {n}" for n in names]
    body = []
    for rank, r in enumerate(rows, start=1):
        points, seeds = str(len(r.answers.cells)), str(len(r.by_seed))
        line = [str(rank), r.name, cell(r.metrics.get("hypervolume")), points, seeds]
        for kind in ("rho_means", "rho_replies", "monotone", "spread"):
            line += [cell(r.metrics.get(f"{kind}/{n}")) for n in names]
        body.append(line)
    return "Steering", header, body


def seed_table(rows: list, names: list[str]) -> tuple[str, list[str], list[list[str]]]:
    """Each seed of the arms trained on several, on its own: whether every seed steers, not only their mean."""
    header = [
        "arm",
        "seed",
        "hypervolume",
        *[f"rho_means {n}" for n in names],
        *[f"spread {n}" for n in names],
    ]
    body = [
        [r.name, str(seed), cell(stats["hypervolume"])]
        + [cell(stats[f"{kind}/{n}"]) for kind in ("rho_means", "spread") for n in names]
        for r in rows
        for seed, stats in r.per_seed.items()
    ]
    return "Per seed (arms trained on several seeds; no intervals)", header, body


def reward_table(rows: list, names: list[str]) -> tuple[str, list[str], list[list[str]]]:
    header = ["arm", *[f"{n} at the default request" for n in names], "log-ratio to base (KL)", "METEOR"]
    header.append("empty replies")
    body = [
        [r.name, *[cell(r.metrics.get(f"default/{n}")) for n in names]]
        + [cell(r.metrics.get("kl")), cell(r.metrics.get("meteor")), empty_replies(r.answers.cells)]
        for r in rows
    ]
    return "Reward at the default request, drift and collapse", header, body


def empty_replies(cells: list) -> str:
    """Replies with no word, over every request: an objective that scores an empty reply well (a length
    reward) can be won by saying nothing, and the hypervolume alone would not show it."""
    texts = [t for c in cells for t in c.texts]
    empty = sum(not t.split() for t in texts)
    return f"{empty} of {len(texts)}"


def cost_table(rows: list, costs: dict, suite: BenchmarkConfig) -> tuple[str, list[str], list[list[str]]]:
    header = ["arm", "train minutes", "samples generated", "tokens generated", "tokens trained"]
    header += ["trainable params", "stored params", "decode tokens/s", "budget"]
    body = []
    for r in rows:
        c = costs[r.arm.name]
        minutes = c["seconds"] / 60 if c["seconds"] is not None else None
        speed = r.answers.decode_tokens / max(r.answers.decode_seconds, 1e-9)
        verdicts = [budget(one, suite) for one in c.get("per_seed", [c])]
        verdict = next((v for v in verdicts if v != "within"), "within")
        line = [r.name, cell(minutes), *[_count(c[k]) for k in COUNTED], cell(float(speed)), verdict]
        body.append(line)
    return "Cost (training of one seed: its runs summed; the mean over the arm's seeds)", header, body


COUNTED = ("samples_generated", "tokens_generated", "tokens_trained", "trainable_params", "stored_params")


def _count(value: float | None) -> str:
    return NA if value is None else f"{int(value):,}"


def budget(cost: dict, suite: BenchmarkConfig) -> str:
    """`within`, or what the arm spent beyond the suite's budget, spent vs limit in the suite's own units (its
    numbers are then not comparable)."""
    limits = {  # cost key: (its name in the suite, the suite's limit, cost units per suite unit, decimals)
        "samples_generated": ("samples", suite.budget.samples, 1, 0),
        "tokens_trained": ("tokens", suite.budget.tokens, 1, 0),
        "seconds": ("minutes", suite.budget.minutes, 60, 1),
    }
    if any(cost[key] is None for key in limits):
        return "unknown (runs without a recorded cost)"
    over = [
        f"{name} {cost[key] / per:,.{decimals}f} > {limit:,}"
        for key, (name, limit, per, decimals) in limits.items()
        if limit and cost[key] / per > limit
    ]
    return "OVER: " + ", ".join(over) if over else "within"


def commands(rows: list) -> str:
    seen, lines = set(), []
    for r in rows:
        if r.arm.name in seen:
            continue
        seen.add(r.arm.name)
        lines += [f"- {r.arm.name}: `{command}`" for command in r.arm.commands()]
    return "\n".join(lines)


def figures(suite: BenchmarkConfig, rows: list, out_dir: Path, report: Report) -> None:
    """The front on the first two axes (every arm's points and own front) and one dial plot per axis."""
    names = list(suite.objectives)
    points = {r.name: np.stack([c.scores.mean(0) for c in r.answers.cells])[:, :2] for r in rows}
    path = plot_pareto(points, out_dir / "front.png", (names[0], names[1]), suite.reference[:2], suite.name)
    report.image(path, out_dir, f"achieved points and each arm's front ({names[0]} vs {names[1]})")
    for k, name in enumerate(names):
        curves = {}
        for r in rows:
            weights = requested(r.answers.cells, names)
            if weights is not None and np.unique(weights[:, k]).size > 1:
                scores = np.stack([c.scores[:, k] for c in r.answers.cells])  # [C, P]
                err = scores.std(1, ddof=1) / np.sqrt(scores.shape[1])
                curves[r.name] = (weights[:, k], scores.mean(1), err)
        path = plot_dial_curves(
            curves,
            out_dir / f"dial_{name}.png",
            suite.name,
            xlabel=f"requested weight on {name}",
            ylabel=name,
        )
        report.image(path, out_dir, f"dial: {name} against its requested weight (mean ± standard error)")


def row_result(row, costs: dict, names: list[str]) -> dict[str, Any]:
    return {
        "name": row.name,
        "arm": row.arm.name,
        "runs": [str(p) for p in row.arm.runs],
        "seeds": list(row.by_seed),
        "per_seed": [{"seed": seed, "metrics": stats} for seed, stats in row.per_seed.items()],
        "metrics": {
            k: None if v is None else {"value": v.value, "low": v.low, "high": v.high}
            for k, v in row.metrics.items()
        },
        "points": [
            {"weights": c.weights, "means": dict(zip(names, c.scores.mean(0).tolist(), strict=True))}
            for c in row.answers.cells
        ],
        "cost": costs[row.arm.name],
        "decode_tokens_per_s": row.answers.decode_tokens / max(row.answers.decode_seconds, 1e-9),
    }
