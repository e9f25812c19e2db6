"""The `data.*` keys: which records to read, how to split and tokenise them."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from steerable.config.base import ConfigError, at_least, choice_enum

DataFormat = choice_enum("DataFormat", ["demo", "jsonl", "oasst1", "hh-rlhf", "helpsteer2", "prompts"])
TooLong = choice_enum("TooLong", ["truncate", "drop"])
# Train on one half of the non-held-out records (SuperHF trains its "train" and "gold" reward models on disjoint
# halves); null = all of them. The held-out split is the same for both halves.
Half = choice_enum("Half", ["first", "second"])


@dataclass
class DataConfig:
    name: str = MISSING
    format: DataFormat = DataFormat["demo"]
    hub_id: str | None = None
    path: str | None = None  # a local copy in the same format as the hub data set; wins over hub_id
    split: str = "train"
    # jsonl only: which fields hold what. `messages` (a chat list) or `prompt` + `response`.
    messages_field: str | None = "messages"
    prompt_field: str = "prompt"
    response_field: str = "response"
    attributes: list[str] = field(default_factory=list)  # attribute names to keep (empty = all found)
    max_records: int | None = None
    val_fraction: float = 0.05
    half: Half | None = None  # train on one half only (see Half); null = all the non-held-out records
    max_length: int = 512
    too_long: TooLong = TooLong["truncate"]
    num_workers: int = 0
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.format != "demo" and not (self.path or self.hub_id):
            raise ConfigError(f"data={self.name} needs data.path (a local file) or data.hub_id")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.max_length < 16:
            raise ConfigError(f"data.max_length must be at least 16, got {self.max_length}")
        at_least("data.num_workers", self.num_workers, 0)
        if self.max_records is not None and self.max_records <= 0:
            raise ConfigError(f"data.max_records must be positive or null, got {self.max_records}")
