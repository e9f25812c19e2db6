"""`steerable-train`: compose a run from config groups, run the method's stages, write the run folder."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from steerable.cli.common import (
    CONF_DIR,
    check_resume_argument,
    report_user_errors,
    set_threads,
    setup_hydra,
    validate,
)
from steerable.config.schema import TrainConfig
from steerable.run_dir import HARDWARE_FILE, is_complete, mark_complete, write_text_atomic

log = logging.getLogger("steerable")


def run(cfg: TrainConfig, run_dir: Path, callbacks: list | None = None) -> dict[str, dict]:
    """Run every selected stage of the configured method in `run_dir` (resuming what is there)."""
    import lightning.pytorch as pl  # heavy imports wait until a run starts, so --help stays fast

    from steerable.hardware import resolve_hardware
    from steerable.methods import METHODS
    from steerable.methods.base import RunContext
    from steerable.pipeline import run_stages

    set_threads(cfg.hardware.torch_threads)
    hardware, choice = resolve_hardware(cfg.hardware)
    cfg = replace(cfg, hardware=hardware)
    log.info("precision %s (hardware.precision=%s): %s", choice.precision, choice.requested, choice.reason)
    write_text_atomic(run_dir / HARDWARE_FILE, json.dumps(choice.as_dict(), indent=2))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.resume is not None and is_complete(run_dir):
        log.info("run %s is already complete; finished stages are skipped", run_dir)
    ctx = RunContext(cfg=cfg, run_dir=run_dir, resuming=cfg.resume is not None, callbacks=callbacks or [])
    try:
        results = run_stages(run_dir, METHODS[cfg.method.name](ctx), cfg.method.stages)
    finally:
        _finish_wandb()
    mark_complete(run_dir, {**results, "hardware": choice.as_dict()})
    return results


def objective(results: dict[str, dict]) -> float:
    """The number a sweep optimises: the last held-out loss (lower is better)."""
    for summary in reversed(list(results.values())):
        if isinstance(summary, dict) and summary.get("val_loss") is not None:
            return float(summary["val_loss"])
    return float("nan")


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
@report_user_errors
def _main(dict_cfg: DictConfig) -> float:
    cfg: TrainConfig = validate(dict_cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    log.info("run folder: %s", run_dir)
    results = run(cfg, run_dir)
    log.info("done: %s", run_dir)
    return objective(results)


def _finish_wandb() -> None:
    """Close the W&B run so the next job of a multirun starts its own."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def main() -> None:
    setup_hydra()
    check_resume_argument(sys.argv[1:])
    _main()


if __name__ == "__main__":
    main()
