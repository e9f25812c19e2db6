"""`steerable-export`: a trained run as a Hugging Face folder (merged weights or adapter) with a model card."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from steerable.cli import common
from steerable.config.schema import ConfigError, ExportConfig

log = logging.getLogger("steerable")


def export(cfg: ExportConfig) -> Path:
    from steerable.methods.registry import load_policy
    from steerable.policies.base import flatten
    from steerable.policies.export import export_policy
    from steerable.policies.export_target import check_export_target

    check_export_target(Path(cfg.out), Path(cfg.run), cfg.overwrite)  # before the model loads
    try:
        policy = load_policy(Path(cfg.run))
    except FileNotFoundError as err:
        raise ConfigError(f"run={cfg.run}: {err}") from None
    controls = flatten(cfg.controls) | ({"weights": list(cfg.weights)} if cfg.weights else {})
    return export_policy(policy, Path(cfg.run), Path(cfg.out), cfg.merged, controls, cfg.overwrite)


@hydra.main(config_path=common.CONF_DIR, config_name="export", version_base="1.3")
@common.report_user_errors
def _main(dict_cfg: DictConfig) -> None:
    cfg: ExportConfig = common.validate(dict_cfg)
    out = export(cfg)
    print(
        f"exported {cfg.run} to {out} ({'merged weights' if cfg.merged else 'adapter'}; see {out}/README.md)"
    )


def main() -> None:
    common.setup_hydra()
    common.launch_on_run("export", "steerable-export run=outputs/quickstart/<timestamp> out=exported", _main)


if __name__ == "__main__":
    main()
