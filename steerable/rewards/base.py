"""Reward sources: one interface for every scorer, a fixed-order stack of them, and a type registry.

Every steerable method (SteerLM annotation, SuperHF filtering, CLP/PCM RL) consumes rewards as a
``[B, K]`` float tensor with named columns. Keeping the contract in one base class means length
checks, ``no_grad`` and the output shape are enforced once, not re-implemented (or forgotten) in each
scorer.
"""

from __future__ import annotations

import dataclasses
import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Any

import torch

__all__ = [
    "RewardSource",
    "RewardStack",
    "available_reward_types",
    "build_reward_source",
    "register_reward_type",
]


def _check_texts(prompts: Sequence[str], responses: Sequence[str]) -> None:
    """Reject the two mistakes that otherwise fail silently: a bare string (iterated per character)
    and prompts/responses of different lengths (zip would truncate)."""
    for label, texts in (("prompts", prompts), ("responses", responses)):
        if isinstance(texts, str | bytes):
            raise TypeError(f"{label} must be a list of strings, got a single {type(texts).__name__}")
    if len(prompts) != len(responses):
        raise ValueError(
            f"prompts and responses must have the same length, got {len(prompts)} prompts "
            f"and {len(responses)} responses"
        )
    for label, texts in (("prompts", prompts), ("responses", responses)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"{label}[{i}] must be a str, got {type(text).__name__}")


class RewardSource(ABC):
    """Scores (prompt, response) pairs with K named outputs.

    Subclasses set ``names`` and implement ``_score``; callers use ``score`` (or call the object),
    which validates inputs, disables autograd and guarantees a CPU float32 ``[B, K]`` tensor.
    Rewards are targets, not part of the graph, so gradients must never flow through them; CPU output
    keeps stacks of sources on different devices composable (the tensor is tiny).
    """

    names: list[str]

    @property
    def measure(self) -> str:
        """What the first output is, in units a report can print beside the numbers."""
        return f"{type(self).__name__} score"

    @property
    def num_outputs(self) -> int:
        """K, the number of reward columns."""
        return len(self.names)

    @abstractmethod
    def _score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """Return a ``[B, K]`` tensor for a validated, non-empty batch; called under ``no_grad``."""

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """Score a batch: ``[B, K]`` float32 on CPU, row ``i`` for ``(prompts[i], responses[i])``."""
        _check_texts(prompts, responses)
        k = self.num_outputs
        if len(prompts) == 0:
            return torch.zeros(0, k, dtype=torch.float32)
        with torch.no_grad():
            out = self._score(list(prompts), list(responses))
        out = torch.as_tensor(out).detach().to(device="cpu", dtype=torch.float32)
        if out.shape != (len(prompts), k):
            raise RuntimeError(
                f"{type(self).__name__} returned shape {tuple(out.shape)}, expected ({len(prompts)}, {k})"
            )
        return out

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        return self.score(prompts, responses)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(names={self.names})"


class RewardStack(RewardSource):
    """Several sources concatenated column-wise in the dict's insertion order.

    Column names are the source key when the source has one output, else ``"key/name"``, so a
    multi-objective method can address every column by a stable, unambiguous name.
    """

    def __init__(self, sources: Mapping[str, RewardSource]) -> None:
        if not sources:
            raise ValueError("RewardStack needs at least one source")
        self.sources: dict[str, RewardSource] = dict(sources)
        names: list[str] = []
        self.slices: dict[str, slice] = {}
        for key, source in self.sources.items():
            if not isinstance(source, RewardSource):
                raise TypeError(f"source {key!r} is a {type(source).__name__}, not a RewardSource")
            start = len(names)
            if source.num_outputs == 1:
                names.append(key)
            else:
                names.extend(f"{key}/{name}" for name in source.names)
            self.slices[key] = slice(start, len(names))
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate reward names in stack: {names}")
        self.names = names

    def label(self, name: str) -> str:
        """A column's name with its units, for axes and table headers: `verbosity (log words)`."""
        source = self.sources.get(name)  # single-output columns are named by their source's key
        return f"{name} ({source.measure})" if source is not None and source.num_outputs == 1 else name

    def index(self, name: str) -> int:
        """Column index of a reward name (as listed in ``names``)."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"unknown reward {name!r}; available: {self.names}") from None

    def _score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        return torch.cat([source.score(prompts, responses) for source in self.sources.values()], dim=1)


# ---------------------------------------------------------------- registry
# Extension point: trained reward models / attribute-prediction models register themselves with
# ``register_reward_type("my_rm", factory)`` (factory: ``**kwargs -> RewardSource``, or a lazy
# ``"module.path:attr"`` string so that importing this module stays cheap and cycle-free), after which
# a config entry ``{"type": "my_rm", ...}`` builds it through ``build_reward_source``.

RewardFactory = Callable[..., RewardSource]

_REGISTRY: dict[str, RewardFactory | str] = {
    "length": "steerable.rewards.programmatic:LengthScorer",
    "readability": "steerable.rewards.programmatic:ReadabilityScorer",
    "sentiment": "steerable.rewards.programmatic:SentimentScorer",
    "vader": "steerable.rewards.programmatic:SentimentScorer",
    "hf_classifier": "steerable.rewards.hf_classifier:HFSequenceClassifierReward",
    "checkpoint": "steerable.rewards.checkpoint:CheckpointReward",  # a reward/attribute model run of ours
}


def register_reward_type(name: str, factory: RewardFactory | str, *, overwrite: bool = False) -> None:
    """Make ``{"type": name, **kwargs}`` buildable; ``factory(**kwargs)`` must return a RewardSource."""
    if name == "stack":
        raise ValueError("'stack' is reserved for RewardStack specs")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"reward type {name!r} is already registered (pass overwrite=True to replace it)")
    if not callable(factory) and not (isinstance(factory, str) and ":" in factory):
        raise TypeError("factory must be a callable or a 'module.path:attr' string")
    _REGISTRY[name] = factory


def available_reward_types() -> list[str]:
    """Registered type names (plus the built-in ``stack``)."""
    return sorted([*_REGISTRY, "stack"])


def _resolve(factory: RewardFactory | str) -> RewardFactory:
    if isinstance(factory, str):
        module_name, _, attr = factory.partition(":")
        return getattr(importlib.import_module(module_name), attr)
    return factory


def _to_plain_dict(spec: Any) -> dict[str, Any]:
    """Accept typed specs (steerable.config.reward: the validated `reward.<name>` of a run), plain mappings (a
    saved run's config) and OmegaConf configs; choices become their plain strings, and `args` (the arguments of
    a type without its own schema) joins the other keys."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(spec, DictConfig):
            spec = OmegaConf.to_container(spec, resolve=True, enum_to_str=True)
    except ImportError:  # pragma: no cover - omegaconf is a project dependency
        pass
    if dataclasses.is_dataclass(spec) and not isinstance(spec, type):
        spec = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    if not isinstance(spec, Mapping):
        raise TypeError(f"reward spec must be a mapping or a RewardSpec, got {type(spec).__name__}")
    plain = {k: v.value if isinstance(v, Enum) else v for k, v in spec.items()}
    extra = dict(plain.pop("args", None) or {})
    clash = sorted(set(extra) & set(plain))
    if clash:
        raise ValueError(f"reward spec sets {clash} both as keys and in 'args'")
    return {**plain, **extra}


def build_reward_source(spec: Mapping[str, Any] | Any) -> RewardSource:
    """Build a source from a spec: a typed `RewardSpec` or a mapping ``{"type": ..., **kwargs}``.

    ``{"type": "stack", "sources": {key: spec, ...}}`` builds a RewardStack of nested specs.
    """
    kwargs = _to_plain_dict(spec)
    if "type" not in kwargs:
        raise KeyError(f"reward spec has no 'type' key: {kwargs}")
    kind = kwargs.pop("type")
    if kind == "stack":
        sources = kwargs.pop("sources", None)
        if not isinstance(sources, Mapping) or kwargs:
            raise ValueError("a stack spec takes exactly one key besides 'type': 'sources', a mapping")
        return RewardStack({key: build_reward_source(sub) for key, sub in sources.items()})
    if kind not in _REGISTRY:
        raise KeyError(f"unknown reward type {kind!r}; registered: {available_reward_types()}")
    source = _resolve(_REGISTRY[kind])(**kwargs)
    if not isinstance(source, RewardSource):
        raise TypeError(
            f"factory for reward type {kind!r} returned {type(source).__name__}, not a RewardSource"
        )
    return source
