"""A training run for the multi-process tests: `python tests/dist_worker.py <run_dir> [crash_at] [overrides..]`.

Lightning starts ranks > 0 by re-running this same command line, so everything a rank needs is in argv and
the run folder is given explicitly (every rank must write into the same one). Each rank appends what it saw
to `<run_dir>/seen-rank<r>.jsonl`: the rows of each training batch (a hash of their token ids, or the prompt
text for online methods) and, for online methods, the rank's own unreduced metrics.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import lightning.pytorch as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import train_in

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


def row_keys(batch) -> list[str]:
    if isinstance(batch, dict):
        rows = zip(batch["input_ids"], batch["attention_mask"], strict=True)  # padding differs by batch
        return [hashlib.sha1(str(ids[mask.bool()].tolist()).encode()).hexdigest()[:10] for ids, mask in rows]
    return [
        hashlib.sha1(json.dumps(item, sort_keys=True, default=str).encode()).hexdigest()[:10]
        for item in batch
    ]


class RecordRows(pl.Callback):
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        entry = {"step": trainer.global_step, "rows": row_keys(batch)}
        local = getattr(pl_module, "last_local_metrics", None)
        if local:
            entry["metrics"] = local
        path = self.run_dir / f"seen-rank{trainer.global_rank}.jsonl"
        with open(path, "a") as handle:
            handle.write(json.dumps(entry) + "\n")


class CrashAtStep(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise SystemExit(3)


def main() -> None:
    run_dir, crash_at, overrides = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    callbacks: list[pl.Callback] = [RecordRows(run_dir)]
    if crash_at > 0:
        callbacks.append(CrashAtStep(crash_at))
    train_in(run_dir, f"output_root={run_dir.parent}", *overrides, callbacks=callbacks)


if __name__ == "__main__":
    main()
