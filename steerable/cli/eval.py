"""`steerable-eval`: measure a finished run; results land in <run>/eval/<kind>/<timestamp>/."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from steerable.cli.common import (
    CONF_DIR,
    check_composition,
    check_run_argument,
    machine_hardware,
    report_user_errors,
    set_threads,
    setup_hydra,
    validate,
)
from steerable.config.schema import ConfigError, EvalConfig

log = logging.getLogger("steerable")


def check_run_folder(run: str) -> None:
    """A run folder, or a Hydra multirun folder of them (a sweep: `eval=superhf` compares its jobs)."""
    path = Path(run)
    if (path / ".hydra").is_dir():
        return
    if path.is_dir() and any((child / ".hydra").is_dir() for child in path.iterdir()):
        return
    raise ConfigError(f"run={run} is neither a run folder nor a multirun folder of runs (no .hydra/ inside)")


@hydra.main(config_path=CONF_DIR, config_name="eval", version_base="1.3")
@report_user_errors
def _main(dict_cfg: DictConfig) -> None:
    cfg: EvalConfig = validate(dict_cfg)
    check_run_folder(cfg.run)
    cfg, _ = machine_hardware(cfg)
    set_threads(cfg.hardware.torch_threads)
    from steerable.evaluation.runner import run_eval

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    result = run_eval(cfg, out_dir)
    print(json.dumps(result, indent=2, default=str))
    log.info("report: %s", out_dir / "report.md")


# debug=fast for an evaluation: a few prompts and short replies (the training `debug` group has no eval keys).
FAST_EVAL = {
    "eval.num_prompts": "2",
    "eval.max_new_tokens": "8",
    "eval.batch_size": "2",
    "data.max_records": "24",
}


def shrunk_for_debug(argv: list[str]) -> list[str]:
    """`debug=fast` replaced by FAST_EVAL overrides (those the user did not set)."""
    if "debug=fast" not in argv:
        return argv
    given = {a.split("=", 1)[0] for a in argv if "=" in a}
    rest = [a for a in argv if a != "debug=fast"]
    return rest + [f"{k}={v}" for k, v in FAST_EVAL.items() if k not in given]


def main() -> None:
    setup_hydra()
    sys.argv = [sys.argv[0], *shrunk_for_debug(sys.argv[1:])]
    check_run_argument(
        sys.argv[1:], required=True, example="steerable-eval run=outputs/quickstart/<timestamp>"
    )
    check_composition("eval", sys.argv[1:])
    _main()


if __name__ == "__main__":
    main()
