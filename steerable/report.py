"""Markdown reports a person can read: what ran, key numbers, sample generations; written atomically."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from steerable.run_dir import write_text_atomic


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", "<br>")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def format_number(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Report:
    """Sections appended in order, then written once to report.md."""

    def __init__(self, title: str) -> None:
        self.parts = [f"# {title}", "", f"Command: `{' '.join(sys.argv)}`", ""]

    def section(self, heading: str, body: str = "") -> Report:
        self.parts += [f"## {heading}", "", body, ""] if body else [f"## {heading}", ""]
        return self

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Report:
        self.parts += [markdown_table(header, [[format_number(c) for c in r] for r in rows]), ""]
        return self

    def records(self, rows: Sequence[dict[str, object]]) -> Report:
        """A table of dicts that share their keys; the first row's keys are the columns."""
        keys = list(rows[0]) if rows else []
        return self.table(keys, [[r[k] for k in keys] for r in rows])

    def key_values(self, values: dict[str, object]) -> Report:
        return self.table(["", "value"], [[k, v] for k, v in values.items()])

    def image(self, path: Path, run_dir: Path, caption: str) -> Report:
        self.parts += [f"![{caption}]({path.relative_to(run_dir)})", ""]
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
        return path
