"""`steerable-train`: compose a run from config groups, run the method's stages, write the run folder."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from steerable.cli.common import (
    CONF_DIR,
    argument,
    check_composition,
    check_resume_argument,
    fail,
    machine_hardware,
    report_user_errors,
    set_threads,
    setup_hydra,
    validate,
)
from steerable.cli.preflight import check_train_paths
from steerable.config.schema import TrainConfig
from steerable.run_dir import HARDWARE_FILE, RunLock, is_complete, mark_complete, write_text_atomic

log = logging.getLogger("steerable")


def run(cfg: TrainConfig, run_dir: Path, callbacks: list | None = None) -> dict[str, dict]:
    """Run every selected stage of the configured method in `run_dir` (resuming what is there)."""
    import lightning.pytorch as pl  # heavy imports wait until a run starts, so --help stays fast

    from steerable.hardware import keep_cpu_memory
    from steerable.methods.base import RunContext
    from steerable.methods.registry import check_train_config, spec_of, stage_functions
    from steerable.pipeline import named_artifacts, run_stages
    from steerable.training.progress import quiet_third_party

    quiet_third_party()
    cfg = check_train_config(cfg)
    set_threads(cfg.hardware.torch_threads)
    cfg, choice = machine_hardware(cfg)
    choice = keep_cpu_memory(cfg.hardware, choice)
    write_text_atomic(run_dir / HARDWARE_FILE, json.dumps(choice.as_dict(), indent=2))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.resume is not None and is_complete(run_dir):
        log.info("run %s is already complete; finished stages are skipped", run_dir)
    ctx = RunContext(cfg=cfg, run_dir=run_dir, resuming=cfg.resume is not None, callbacks=callbacks or [])
    lock = RunLock(run_dir) if launching_process() else None  # ranks > 0 share rank 0's folder
    try:
        stages = stage_functions(spec_of(cfg.method.name), ctx)
        results = run_stages(run_dir, stages, cfg.method.stages, named_artifacts(cfg.method))
        mark_complete(run_dir, {**results, "hardware": choice.as_dict()})
    finally:
        _finish_wandb()
        if lock is not None:
            lock.release()
    return results


def launching_process() -> bool:
    """The process a user started: Lightning starts the other ranks with LOCAL_RANK / NODE_RANK set, torchrun
    sets RANK, and srun starts one task per rank with SLURM_PROCID."""
    return all(os.environ.get(key, "0") == "0" for key in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID"))


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
    check_train_paths(cfg)  # again in the job: sweeps (-m) and hydra.* overrides skip check_composition
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    h = cfg.hardware
    log.info(
        "steerable-train: method=%s stages=%s model=%s data=%s on %s x%d (%s, precision %s), run folder %s",
        cfg.method.name,
        list(cfg.method.stages),
        cfg.model.name,
        cfg.data.name,
        h.accelerator.value,
        h.devices * h.num_nodes,
        h.strategy.value,
        h.precision.value,
        run_dir,
    )
    results = run(cfg, run_dir)
    log.info("done: %s", run_dir)
    return objective(results)


def _finish_wandb() -> None:
    """Close the W&B run so the next job of a multirun starts its own."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def check_sweep_arguments(argv: list[str]) -> None:
    """A sweep needs at least one trial (Optuna's sweeper would end in a traceback asking for the best one)."""
    trials = argument(argv, "hydra.sweeper.n_trials")
    if trials is not None and not (trials.strip().isdigit() and int(trials) >= 1):
        fail(f"hydra.sweeper.n_trials={trials}: an Optuna sweep needs at least 1 trial")


def main() -> None:
    setup_hydra()
    if {"--help", "-h"} & set(sys.argv[1:]):
        from steerable.methods.registry import describe

        print(describe() + "\n")
    check_resume_argument(sys.argv[1:])
    check_sweep_arguments(sys.argv[1:])
    check_composition("train", sys.argv[1:])
    _main()


if __name__ == "__main__":
    main()
