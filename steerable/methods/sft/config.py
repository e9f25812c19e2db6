"""The `method.*` keys of sft: the schema Hydra validates its conf/method option against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from steerable.config.method import RecipeConfig
from steerable.methods.registry import needs_responses


@dataclass
class SFTConfig(RecipeConfig):
    name: str = "sft"


def check(cfg: Any) -> None:
    needs_responses(cfg)
