"""PNG figures for evaluation reports: dial-response curves, Pareto fronts, training/eval series.

Figures are drawn on the Agg canvas directly (no pyplot, no global backend switch, safe in headless jobs and
threads) and written atomically — temp file in the target directory, then ``os.replace`` — so a crashed or
concurrent job never leaves a truncated PNG where a report expects a complete one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from steerable.evaluation.metrics import pareto_front

__all__ = ["plot_dial_curves", "plot_pareto", "plot_series"]


def _arr(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=float)


def _new_figure() -> tuple[Figure, Any]:
    fig = Figure(figsize=(6.0, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _save_atomic(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as PNG to ``path`` via a temp file in the same directory (same filesystem → atomic rename)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", bbox_inches="tight")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def plot_dial_curves(
    curves: Mapping[str, tuple[Any, Any, Any | None]],
    path: str | os.PathLike[str],
    title: str = "",
    *,
    xlabel: str = "requested value",
    ylabel: str = "measured value",
    identity: bool = False,
) -> Path:
    """One line per arm: measured mean (± stderr band/bars) against the requested dial value.

    ``curves[name] = (requested values, measured means, stderrs or None)``. ``identity`` draws y = x, for dials
    whose requested and measured values share a scale (e.g. SteerLM attribute labels).
    """
    fig, ax = _new_figure()
    lo, hi = np.inf, -np.inf
    for name, (req, mean, err) in curves.items():
        x, y = _arr(req), _arr(mean)
        order = np.argsort(x, kind="stable")
        yerr = None if err is None else _arr(err)[order]
        ax.errorbar(x[order], y[order], yerr=yerr, marker="o", markersize=4, capsize=3, label=name)
        if x.size:
            lo, hi = min(lo, float(np.min(x))), max(hi, float(np.max(x)))
    if identity and np.isfinite(lo):
        ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=1, label="y = x")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # dial values are labels; no 0.5 ticks between them
    return _finish(fig, ax, path, (xlabel, ylabel), title, legend=bool(curves))


def plot_pareto(
    arms: Mapping[str, Any],
    path: str | os.PathLike[str],
    labels: tuple[str, str] = ("reward 1", "reward 2"),
    reference: Sequence[float] | None = None,
    title: str = "",
) -> Path:
    """Scatter each arm's [N, 2] points (maximise both) and connect that arm's own non-dominated front.

    ``reference`` marks the hypervolume reference point so readers see which points count toward HV.
    """
    fig, ax = _new_figure()
    for name, pts in arms.items():
        p = _arr(pts).reshape(-1, 2)
        (line,) = ax.plot([], [], marker="o", label=name)  # reserve the arm's colour for points and front
        color = line.get_color()
        ax.scatter(p[:, 0], p[:, 1], color=color, alpha=0.35, s=18)
        if p.shape[0]:
            front = p[pareto_front(p)]
            front = front[np.argsort(front[:, 0], kind="stable")]
            line.set_data(front[:, 0], front[:, 1])
    if reference is not None:
        ax.scatter([reference[0]], [reference[1]], marker="x", color="black", s=50, label="HV reference")
    return _finish(fig, ax, path, (labels[0], labels[1]), title, legend=bool(arms or reference is not None))


def _finish(fig, ax, path: Path, labels: tuple[str, str], title: str | None, legend: bool) -> Path:
    """Axis labels, title, grid and legend every plot here shares; then the file, written atomically."""
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if legend:
        ax.legend(fontsize="small")
    return _save_atomic(fig, path)


def plot_series(
    x: Any,
    ys: Mapping[str, Any],
    path: str | os.PathLike[str],
    xlabel: str = "step",
    ylabel: str = "",
    title: str = "",
) -> Path:
    """Several series over a shared x (e.g. RM score, KL and METEOR similarity against training step)."""
    fig, ax = _new_figure()
    xs = _arr(x)
    for name, values in ys.items():
        v = _arr(values)
        if v.shape != xs.shape:
            raise ValueError(f"series {name!r} has length {v.size}, x has {xs.size}")
        ax.plot(xs, v, label=name)
    return _finish(fig, ax, path, (xlabel, ylabel), title, legend=bool(ys))
