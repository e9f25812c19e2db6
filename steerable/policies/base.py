"""The inference interface every trained run offers, whatever method made it.

A `SteerablePolicy` says what a user may set (`controls()`: SteerLM's attribute dials, CLP's weights on the
simplex, PCM's side per dimension, nothing for a plain policy) and generates replies for chat prompts under
those settings. `steerable-generate`, the generic `steerable-eval` kinds and a future playground or server
use only this, so they never need to know which method trained the run.

Control names are flat strings; a dotted name belongs to a group (`attributes.quality` to `attributes`,
`preference.verbosity` to `preference`). A nested mapping such as Hydra's `{"attributes": {"quality": 4}}`
is read as the dotted names it spells.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from steerable.config.schema import ConfigError, GenerationConfig, ModelConfig
from steerable.generation import Completion, GenerationSettings, Sampler, make_sampler

ControlKind = Literal["number", "weights", "choice", "text"]
WEIGHT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Control:
    """One setting a user may choose, with everything a form needs to render it.

    - number: a value in [low, high] (step 1 = integers only), e.g. a SteerLM attribute;
    - weights: one non-negative value per name in `options`, summing to 1 (CLP / Rewarded Soups);
    - choice: one of `options` (a PCM dimension's two sides);
    - text: any text (the prompting baseline's instruction).
    `default` None means the control must be given."""

    name: str
    kind: ControlKind
    doc: str = ""
    default: Any = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    options: tuple[str, ...] = ()

    @property
    def group(self) -> str:
        return self.name.partition(".")[0]

    @property
    def allowed(self) -> str:
        """The allowed values in words, for error messages and help."""
        if self.kind == "number":
            what = "integers" if self.step == 1 else "numbers"
            return f"{what} in [{_plain(self.low)}, {_plain(self.high)}]"
        if self.kind == "weights":
            return f"one non-negative value per objective {list(self.options)}, summing to 1"
        if self.kind == "text":
            return "any text"
        return f"one of {list(self.options)}"

    def check(self, value: Any) -> Any:
        """`value` in its canonical form, or a one-line ConfigError naming this control and what it allows."""
        if self.kind == "number":
            return self._number(value)
        if self.kind == "weights":
            return self._weights(value)
        if self.kind == "text":
            return str(value)
        if value not in self.options:
            raise ConfigError(f"{self.name}={value!r}: {self.allowed}")
        return value

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for a UI."""
        return {**asdict(self), "options": list(self.options), "allowed": self.allowed}

    def _number(self, value: Any) -> float | int:
        bad = ConfigError(f"{self.name}={value}: values are {self.allowed} for this model")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise bad from None
        integer = self.step == 1
        if (integer and number != int(number)) or not self.low <= number <= self.high:
            raise bad
        return int(number) if integer else number

    def _weights(self, value: Any) -> list[float]:
        names = list(self.options)
        try:
            weights = [float(w) for w in value]
        except (TypeError, ValueError):
            raise ConfigError(f"{self.name}={value!r}: {self.allowed}") from None
        if len(weights) != len(names):
            raise ConfigError(f"{self.name}={weights} needs one value per objective {names}")
        if min(weights) < 0 or abs(sum(weights) - 1) > WEIGHT_TOLERANCE:
            raise ConfigError(f"{self.name}={weights} must be non-negative and sum to 1 (objectives {names})")
        return weights


@dataclass(frozen=True)
class Objective:
    """What an objective of a benchmark suite means in a data set's labels, for policies conditioned on labels
    rather than on weights (SteerLM's attribute dials, PCM's sides, the prompting baseline's instruction):
    `attribute` is the label it follows, `direction` +1 when more of the label scores higher and -1 when less,
    `instruction` how a person would ask for it in words."""

    attribute: str | None = None
    direction: int = 1
    instruction: str = ""


@dataclass(frozen=True)
class Request:
    """A point of a benchmark's request grid: how much each objective counts (`weights`: objective name ->
    non-negative weight, summing to 1). Weight-conditioned policies read only `weights`; `objectives` says
    what each objective means for the few policies that steer by labels or words instead."""

    weights: dict[str, float]
    objectives: Mapping[str, Objective] = field(default_factory=dict)

    def __post_init__(self) -> None:
        values = list(self.weights.values())
        if not values or min(values) < 0 or abs(sum(values) - 1) > WEIGHT_TOLERANCE:
            raise ConfigError(f"request weights {self.weights} must be non-negative and sum to 1")

    def weight(self, name: str) -> float:
        return float(self.weights[name])


def weights_control(objectives: Sequence[str], doc: str) -> Control:
    """The one `weights` control of a policy steered by a weighting of its objectives (the reward-weighted
    methods): on the simplex, uniform by default, named by objective so a benchmark request maps onto it."""
    m = len(objectives)
    return Control("weights", "weights", doc=doc, default=[1 / m] * m, options=tuple(objectives))


def _plain(x: float | None) -> str:
    return str(int(x)) if x is not None and float(x).is_integer() else str(x)


def flatten(controls: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"attributes": {"quality": 4}}` -> `{"attributes.quality": 4}`; lists and scalars are values."""
    out: dict[str, Any] = {}
    for key, value in controls.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


@dataclass
class Network:
    """The model a policy generates with, its tokenizer, and where it came from: `origin` names it in errors
    (`run=<folder>`, `model=<name>`), `kind` is the method that made it, `model_cfg` the base it was trained
    from, when known. Every policy is built on one."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    origin: str
    kind: str
    model_cfg: ModelConfig | None = None


class SteerablePolicy(ABC):
    """A trained run (or a bare model) ready to generate. `kind` is the method that made it; `origin` says
    where it came from in errors (`run=<folder>`, `model=<name>`)."""

    kind: str = "policy"
    origin: str = ""
    model: torch.nn.Module  # the network that generates (PCM: the experts)
    tokenizer: PreTrainedTokenizerBase
    model_cfg: ModelConfig | None = None  # the base it was trained from, when known
    generation: GenerationConfig | None = None  # the engine (`generation.*` of the CLI); None = the defaults
    streamer: Any = (
        None  # a transformers streamer for single replies (steerable-serve); engines may ignore it
    )
    # the controls choose the network's weights (CLP, Rewarded Soups), not its prompt: an export is one setting
    controls_in_weights: bool = False
    # a fixed policy trained for one weighting of the objectives (one run per weighting); None = not trained
    # for a weighting. A benchmark plots such a policy's one point at these weights.
    fixed_weights: dict[str, float] | None = None

    def __init__(self, network: Network) -> None:
        self.model, self.tokenizer = network.model, network.tokenizer
        self.origin, self.kind, self.model_cfg = network.origin, network.kind, network.model_cfg

    @property
    def network(self) -> Network:
        return Network(self.model, self.tokenizer, self.origin, self.kind, self.model_cfg)

    def sampler(self, model: torch.nn.Module | None = None) -> Sampler:
        """The configured engine over `model` (default: the policy's own network)."""
        sampler = make_sampler(
            model if model is not None else self.model, self.tokenizer, None, self.generation
        )
        if self.streamer is not None and hasattr(sampler, "streamer"):
            sampler.streamer = self.streamer
        return sampler

    @abstractmethod
    def controls(self) -> list[Control]:
        """What a user may set, in display order."""

    @abstractmethod
    def _generate(
        self, prompts: list[list[dict]], values: dict[str, Any], settings: GenerationSettings
    ) -> list[Completion]:
        """Generation with `values` already checked and complete (every control has a value)."""

    def to(self, device: torch.device | str) -> SteerablePolicy:
        """Move every model the policy runs to `device`; returns self. A policy that runs more than `model`
        extends it."""
        self.model.to(device)
        return self

    def generate(
        self, prompts: Sequence[list[dict]], controls: Mapping[str, Any], settings: GenerationSettings
    ) -> list[Completion]:
        """`settings.num_return_sequences` completions per chat prompt, grouped by prompt in input order,
        all under the same `controls` (checked first; unset controls take their defaults)."""
        return self._generate(list(prompts), self.resolve(controls), settings)

    def controls_for(self, request: Request) -> dict[str, Any]:
        """The controls that ask this policy for `request` (a benchmark grid point). Plain policies: {}.
        One `weights` control whose options are objective names (CLP, Rewarded Soups): set by objective
        name. Policies steered otherwise (labels, sides, words) override this in their method's package."""
        controls = self.controls()
        if not controls:
            return {}
        weighted = [c for c in controls if c.kind == "weights"]
        if len(weighted) != 1 or len(controls) != 1:
            raise ConfigError(
                f"{self.origin}: a {self.kind} policy has controls {[c.name for c in controls]}; its method "
                "must say how a request maps onto them (override controls_for)"
            )
        control = weighted[0]
        if set(control.options) != set(request.weights):
            raise ConfigError(
                f"{self.origin}: the request weighs objectives {sorted(request.weights)} but the {self.kind} "
                f"policy was trained on {list(control.options)}"
            )
        return {control.name: [request.weight(name) for name in control.options]}

    def alternatives(self) -> dict[str, SteerablePolicy]:
        """Other ways to decode from the same trained run, each compared as its own row (Rewarded Soups:
        logit mixing of its single-reward policies); {} for most policies."""
        return {}

    def resolve(self, controls: Mapping[str, Any]) -> dict[str, Any]:
        """Every control's value: the given ones checked, the rest their defaults. Unknown names are errors."""
        known = {c.name: c for c in self.controls()}
        given = self.short_names(flatten(controls), known)
        groups = {c.group for c in known.values()}
        # names of no group the policy has are refused before a shorthand is parsed (the clearer error)
        self._refuse_unknown([n for n in given if n not in known and n.partition(".")[0] not in groups])
        given = self.expand(given)
        self._refuse_unknown([name for name in given if name not in known])
        values = {}
        for name, control in known.items():
            if name in given:
                values[name] = control.check(given[name])
            elif control.default is None:
                raise ConfigError(f"{name} is required for {self.origin}: {control.allowed}")
            else:
                values[name] = control.default
        return values

    @staticmethod
    def short_names(given: dict[str, Any], known: Mapping[str, Control]) -> dict[str, Any]:
        """`verbosity` for `attributes.verbosity`: a bare name that ends exactly one control's name."""
        out = {}
        for name, value in given.items():
            matches = [k for k in known if k.endswith(f".{name}")] if name not in known else []
            out[matches[0] if len(matches) == 1 else name] = value
        return out

    def expand(self, given: dict[str, Any]) -> dict[str, Any]:
        """Shorthands a policy accepts for its controls (PCM: `preference="concise, friendly"`)."""
        return given

    def describe(self, values: Mapping[str, Any]) -> str:
        """What the model is conditioned on under `values`, for logs ("" when there is nothing to say)."""
        return ""

    def network_for(self, values: Mapping[str, Any]) -> torch.nn.Module:
        """One plain transformers network that generates as this policy does under `values`, every LoRA
        update folded in (for export). Policies whose controls live in the prompt ignore `values`; a policy
        that mixes several adapters per request has no such network (one-line ConfigError)."""
        from steerable.backbone.adapters import merged_copy

        self.check_single_network()
        return merged_copy(self.model)

    def adapter_for(self, values: Mapping[str, Any]) -> torch.nn.Module:
        """The PEFT model whose one adapter generates as this policy does under `values` (adapter export)."""
        self.check_single_network()
        return self.model

    def check_single_network(self) -> None:
        """One network with at most one active adapter; a per-request mixture of adapters has no single set
        of weights (one-line ConfigError)."""
        from steerable.backbone.adapters import single_active_adapter

        if isinstance(self.model, PeftModel) and single_active_adapter(self.model) is None:
            raise ConfigError(
                f"{self.origin}: a {self.kind} policy mixes {len(self.model.peft_config)} adapters per request, "
                "so it has no single set of weights to export; export runs with one adapter or full weights"
            )

    def plain_prompt(self, messages: list[dict], values: Mapping[str, Any]) -> str | None:
        """The exact text to feed the network for `messages` under `values`, for users without this library
        (exported models, other engines); None where controls are not written into the prompt."""
        return None

    def _refuse_unknown(self, unknown: list[str]) -> None:
        if not unknown:
            return
        controls = self.controls()
        groups = {c.group: [d for d in controls if d.group == c.group] for c in controls}
        for name in unknown:
            group = name.partition(".")[0]
            if "." in name and group in groups:
                members = [c.name.partition(".")[2] for c in groups[group]]
                missing = sorted(n.partition(".")[2] for n in unknown if n.partition(".")[0] == group)
                raise ConfigError(f"{group}: {self.origin} has {group} {members}; unknown {missing}")
        if not controls:
            names = ", ".join(unknown)
            raise ConfigError(f"{names}: {self.origin} is a {self.kind} policy, which takes no controls")
        summary = "; ".join(f"{c.name}: {c.allowed}" for c in controls)
        only = ", ".join(groups)
        raise ConfigError(
            f"{', '.join(unknown)}: {self.origin} is a {self.kind} policy, whose only "
            f"{'control is' if len(groups) == 1 else 'controls are'} {only} ({summary})"
        )
