"""`steerable-eval`: measure a finished run; results land in <run>/eval/<kind>/<timestamp>/."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from steerable.cli.common import CONF_DIR, set_threads, setup_hydra, validate
from steerable.config.schema import ConfigError, EvalConfig

log = logging.getLogger("steerable")


@hydra.main(config_path=CONF_DIR, config_name="eval", version_base="1.3")
def _main(dict_cfg: DictConfig) -> None:
    cfg: EvalConfig = validate(dict_cfg)
    if not (Path(cfg.run) / ".hydra").is_dir():
        raise ConfigError(f"run={cfg.run} is not a run folder (no .hydra/ inside)")
    set_threads(cfg.hardware.torch_threads)
    from steerable.evaluation.runner import run_eval

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    result = run_eval(cfg, out_dir)
    print(json.dumps(result, indent=2, default=str))
    log.info("report: %s", out_dir / "report.md")


def main() -> None:
    setup_hydra()
    _main()


if __name__ == "__main__":
    main()
