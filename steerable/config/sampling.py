"""The `sampling.*` keys: how replies are decoded. Every config that samples nests one `SamplingConfig` under
`sampling` with its own defaults (report.sampling, method.sampling, method.eval.sampling, benchmark.sampling,
eval.sampling, the CLIs' sampling), so each knob has one name and one rule wherever it appears."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from steerable.config.base import ConfigError, at_least


@dataclass
class SamplingConfig:
    """Decoding settings. The class defaults are the engines' own; a config that nests one gives its own with
    `field(default_factory=lambda: SamplingConfig(max_new_tokens=64, ...))`."""

    max_new_tokens: int = 128
    do_sample: bool = False  # false = greedy; temperature, top_p and top_k apply when sampling
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None  # null = no top-k filter (not transformers' default of 50)
    stop: list[str] = field(default_factory=list)  # strings that end a reply (cut before them)

    def check(self, key: str = "") -> None:
        """Raise a ConfigError naming `key`.<field> (the field alone when `key` is empty) for a value out of
        range. Runs where the config is validated, which knows the full key."""
        prefix = f"{key}." if key else ""
        at_least(f"{prefix}max_new_tokens", self.max_new_tokens, 1)
        at_least(f"{prefix}temperature", self.temperature, 0, strictly=True)
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"{prefix}top_p must be in (0, 1], got {self.top_p}")
        at_least(f"{prefix}top_k", self.top_k, 1)
        if any(not s for s in self.stop):
            raise ConfigError(f"{prefix}stop strings must be non-empty, got {list(self.stop)}")


SAMPLING_KEYS = tuple(f.name for f in dataclasses.fields(SamplingConfig))


def check_sampling(config: Any, key: str = "") -> None:
    """Check every SamplingConfig nested in a validated config (dataclasses and dicts of them), each error
    naming its full key (`report.sampling.top_p must be in (0, 1], got 0`)."""
    if isinstance(config, SamplingConfig):
        config.check(key)
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        for f in dataclasses.fields(config):
            check_sampling(getattr(config, f.name), f"{key}.{f.name}" if key else f.name)
    elif isinstance(config, dict):
        for name, value in config.items():
            check_sampling(value, f"{key}.{name}" if key else str(name))


def nest_flat_sampling(section: Any, schema: type) -> Any:
    """A section of a run folder's saved config in today's shape for `schema`: a run made before the sampling
    keys were nested saved them flat (`method.max_new_tokens`); each one that `schema` now keeps under a
    `sampling: SamplingConfig` field moves there, at every depth. Returns a plain dict (None stays None);
    interpolations are kept as written."""
    if section is None:
        return None
    plain = OmegaConf.to_container(section) if isinstance(section, DictConfig) else dict(section)
    hints = typing.get_type_hints(schema)
    for name, hint in hints.items():
        nested = dataclass_in(hint)
        if nested is SamplingConfig:
            flat = {k: plain.pop(k) for k in SAMPLING_KEYS if k in plain and k not in hints}
            if flat:
                plain[name] = {**flat, **(plain.get(name) or {})}
        elif nested is not None and isinstance(plain.get(name), dict):
            plain[name] = nest_flat_sampling(plain[name], nested)
    return plain


def dataclass_in(hint: Any) -> type | None:
    """The dataclass a field's type names (`X`, or `X | None`), else None."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    found = [o for o in options if isinstance(o, type) and dataclasses.is_dataclass(o)]
    return found[0] if len(found) == 1 else None


OLD_KEY = re.compile(r"(?:full_key: |Could not override ')([\w.]+)")


def moved_key_hint(message: str) -> str:
    """For a composition error about a sampling key given flat (`method.max_new_tokens=64`, as before the keys
    were nested): 'method.max_new_tokens is now method.sampling.max_new_tokens'; else ''."""
    for key in OLD_KEY.findall(message):
        parent, _, leaf = key.rpartition(".")
        if leaf in SAMPLING_KEYS and not parent.endswith("sampling"):
            return f"{key} is now {parent + '.' if parent else ''}sampling.{leaf}"
    return ""
