"""What every config module shares: the error a wrong value raises, a numeric bound, and config choices."""

from __future__ import annotations

import sys
from enum import Enum

from steerable.errors import UserError


class ConfigError(UserError, ValueError):
    """A config value is wrong; the message names the key."""


def at_least(key: str, value: float | None, low: float, strictly: bool = False) -> None:
    """A numeric knob's lower bound (null passes: it means "off" or "default" where allowed)."""
    if value is None:
        return
    if value < low or (strictly and value == low):
        bound = f"greater than {low}" if strictly else f"at least {low}"
        raise ConfigError(f"{key} must be {bound}, got {value}")


class Choice(str, Enum):
    """A config choice: a str Enum whose member names are the exact spellings users type (`bf16-mixed`).

    OmegaConf validates enum fields by member name at composition, so a wrong value fails there, naming the key
    and listing the allowed ones (one error format for every choice). Members compare, hash and JSON-encode as
    their strings, and print as them too: Python 3.11's str-mixin Enum would print `Name.value`.
    """

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


def choice_enum(name: str, values: list[str]) -> type[Choice]:
    """A `Choice` Enum with these values (names = values), defined in the caller's module so it pickles."""
    module = sys._getframe(1).f_globals["__name__"]
    return Choice(name, [(v, v) for v in values], module=module, qualname=name)  # type: ignore[return-value]
