"""Markdown reports a person can read: what ran, key numbers, sample generations; written atomically."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from steerable.run_dir import write_text_atomic

log = logging.getLogger(__name__)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", "<br>")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def format_number(value: object) -> str:
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.4g}"  # NaN: undefined (e.g. a constant measure)
    return str(value)


class Report:
    """Sections appended in order, then written once to report.md; the same tables, figures and headline
    numbers also go to W&B when a W&B run is active (`publish_to_wandb`)."""

    def __init__(self, title: str) -> None:
        self.parts = [f"# {title}", "", f"Command: `{' '.join(sys.argv)}`", ""]
        self.heading = "report"
        self.tables: list[tuple[str, list[str], list[list[object]]]] = []  # (section, header, rows)
        self.figures: list[tuple[str, Path]] = []  # (caption, file)
        self.headlines: dict[str, object] = {}  # "section/key" -> value, from key_values

    def section(self, heading: str, body: str = "") -> Report:
        self.parts += [f"## {heading}", "", body, ""] if body else [f"## {heading}", ""]
        self.heading = heading
        return self

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Report:
        self.parts += [markdown_table(header, [[format_number(c) for c in r] for r in rows]), ""]
        self.tables.append((self.heading, [str(h) for h in header], [list(r) for r in rows]))
        return self

    def records(self, rows: Sequence[dict[str, object]]) -> Report:
        """A table of dicts that share their keys; the first row's keys are the columns."""
        keys = list(rows[0]) if rows else []
        return self.table(keys, [[r[k] for k in keys] for r in rows])

    def key_values(self, values: dict[str, object]) -> Report:
        self.headlines |= {f"{self.heading}/{k}": v for k, v in values.items()}
        return self.table(["", "value"], [[k, v] for k, v in values.items()])

    def image(self, path: Path, run_dir: Path, caption: str) -> Report:
        self.parts += [f"![{caption}]({path.relative_to(run_dir)})", ""]
        self.figures.append((caption, Path(path)))
        return self

    def before_after(
        self, prompts: Sequence[list[dict]], before: Sequence, after: Sequence, note: str
    ) -> int:
        """A "Sample generations" section: each prompt with its reply before and after training (completions
        with a `.text`); `note` says how they were sampled and what "before" is. Returns the row count."""
        rows = [[p[-1]["content"], b.text, a.text] for p, b, a in zip(prompts, before, after, strict=True)]
        self.section("Sample generations", note)
        self.table(["prompt", "before training", "after training"], rows)
        return len(rows)

    def text(self, body: str) -> Report:
        self.parts += [body, ""]
        return self

    def write(self, path: Path) -> Path:
        write_text_atomic(path, "\n".join(self.parts).rstrip() + "\n")
        publish_to_wandb(self)
        return path


def _key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_./-]+", "_", text).strip("_")[:80] or "table"


def typed_cells(rows: list[list[object]]) -> list[list[object]]:
    """W&B types each column by its cells: a column of numbers stays numeric, any other becomes text."""
    numeric = [
        all(isinstance(row[i], (int, float)) and not isinstance(row[i], bool) for row in rows)
        for i in range(len(rows[0]) if rows else 0)
    ]
    return [[cell if numeric[i] else str(cell) for i, cell in enumerate(row)] for row in rows]


def publish_to_wandb(report: Report) -> None:
    """Every table (as a W&B Table) and figure (as an Image) of the report, and its headline numbers in the
    run summary, under `report/...`; nothing happens unless this process has an active W&B run (logger.wandb)."""
    if "wandb" not in sys.modules:
        return
    import wandb

    if wandb.run is None:
        return
    payload: dict[str, object] = {}
    for index, (heading, header, rows) in enumerate(report.tables):
        payload[f"report/{_key(heading)}/table_{index}"] = wandb.Table(columns=header, data=typed_cells(rows))
    for caption, path in report.figures:
        if path.is_file():
            payload[f"report/figures/{_key(path.stem)}"] = wandb.Image(str(path), caption=caption)
    try:
        if payload:
            wandb.log(payload, commit=True)
        for key, value in report.headlines.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                wandb.run.summary[f"report/{_key(key)}"] = value
    except Exception as err:  # the report file is written; a W&B hiccup must not fail the run at its end
        log.warning("could not log the report to W&B: %s", err)
