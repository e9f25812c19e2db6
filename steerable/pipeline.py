"""Run a method's stages in order; each finished stage leaves a marker with its summary and is skipped on re-run."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from steerable.run_dir import write_text_atomic

log = logging.getLogger(__name__)

StageFn = Callable[[dict[str, dict]], dict]  # gets the summaries of earlier stages


def stage_marker(run_dir: Path, name: str) -> Path:
    return run_dir / "stages" / f"{name}.json"


def run_stages(run_dir: Path, stages: dict[str, StageFn], selected: Sequence[str]) -> dict[str, dict]:
    unknown = [s for s in selected if s not in stages]
    if unknown:
        raise ValueError(f"method.stages has unknown stage(s) {unknown}; this method has {list(stages)}")
    results = {
        n: json.loads(stage_marker(run_dir, n).read_text())
        for n in stages
        if stage_marker(run_dir, n).is_file()
    }
    for name in selected:
        if name in results:
            log.info("stage %s already finished in %s; skipping", name, run_dir)
            continue
        log.info("stage %s: start", name)
        results[name] = stages[name](results)
        write_text_atomic(
            stage_marker(run_dir, name), json.dumps(results[name], indent=2, sort_keys=True, default=str)
        )
        log.info("stage %s: done", name)
    return results
