"""The `logger.*` keys: which metric loggers a run writes to."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from steerable.config.base import ConfigError


@dataclass
class WandbConfig:
    project: str = "steerable"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    offline: bool = True
    log_model: bool = False


@dataclass
class LoggerConfig:
    """Which loggers a run writes to. CSV (metrics.csv in the run folder) is on unless `none`."""

    name: str = MISSING
    csv: bool = True
    wandb: bool = False
    tensorboard: bool = False
    wandb_settings: WandbConfig = field(default_factory=WandbConfig)

    def __post_init__(self) -> None:
        if self.wandb and self.wandb_settings.offline and self.wandb_settings.log_model:
            raise ConfigError("logger.wandb_settings.log_model cannot be true for an offline W&B run")
