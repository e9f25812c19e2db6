"""Shared start-up of the Hydra apps: config location, resolvers, schema registration, validation."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from steerable.config.schema import ConfigError
from steerable.config.store import register_configs
from steerable.run_dir import resolve_run_dir

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
log = logging.getLogger(__name__)


def setup_hydra() -> None:
    """Register schemas and the run-folder resolver; safe to call more than once."""
    register_configs()
    if not OmegaConf.has_resolver("steerable_run_dir"):
        OmegaConf.register_new_resolver("steerable_run_dir", resolve_run_dir, use_cache=True)


def validate(cfg: DictConfig) -> Any:
    """Turn the composed config into dataclass objects, running every cross-field check before any work."""
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        cause = err.__cause__ or err.__context__
        if isinstance(cause, ConfigError):
            raise ConfigError(str(cause)) from None
        raise ConfigError(str(err)) from None


def machine_hardware(cfg: Any) -> Any:
    """`cfg` with its hardware resolved for this machine (auto precision/accelerator), the choice logged."""
    from dataclasses import replace

    from steerable.hardware import resolve_hardware

    hardware, choice = resolve_hardware(cfg.hardware)
    log.info("precision %s (hardware.precision=%s): %s", choice.precision, choice.requested, choice.reason)
    return replace(cfg, hardware=hardware)


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
