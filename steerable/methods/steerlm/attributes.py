"""SteerLM's attribute schema: which attributes, in which order, on which scale, and how the label reads.

The label string is NeMo's `",".join(f"{name}:{value}")` in schema order, behind a marker (`<extra_id_2>` by
default) and followed by a newline, at the start of the assistant reply:

    <assistant header><extra_id_2>quality:4,toxicity:0,humor:0,creativity:0\n{response}<end of turn>

Training masks the marker and label out of the loss; inference writes the same text after the assistant header.
The schema travels with the checkpoint, so a request for an unknown attribute or an out-of-range value fails.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from transformers import PreTrainedTokenizerBase

from steerable.config.schema import ConfigError
from steerable.data.records import Conversation

# NeMo-Aligner's canonical lists (examples/nlp/data/steerlm/common.py); their order is the label order.
OASST_ATTRIBUTES = ["quality", "toxicity", "humor", "creativity"]
HELPSTEER_ATTRIBUTES = ["helpfulness", "correctness", "coherence", "complexity", "verbosity"]
PRESETS: dict[str, list[str]] = {
    "oasst": OASST_ATTRIBUTES,
    "helpsteer": HELPSTEER_ATTRIBUTES,
    "steerlm": OASST_ATTRIBUTES + HELPSTEER_ATTRIBUTES,
    "demo": ["verbosity", "positivity"],
}
PRESET_BY_DATA = {"oasst1": "oasst", "helpsteer2": "helpsteer", "demo": "demo"}

# Inference values the papers use for attributes a user does not set: the good end of quality-like
# attributes, the low end of the risky or stylistic ones (HelpSteer: all 4 except creativity/humor/toxicity 0).
HIGH_IS_GOOD = {"quality", "helpfulness", "correctness", "coherence"}
LOW_IS_GOOD = {"toxicity", "violence", "not_appropriate", "humor", "creativity"}


@dataclass(frozen=True)
class AttributeSchema:
    names: tuple[str, ...]
    value_range: tuple[int, int] = (0, 4)
    label_start: str = "<extra_id_2>"
    defaults: dict[str, int] = field(default_factory=dict)  # inference values for attributes left unset

    def __post_init__(self) -> None:
        if not self.names:
            raise ConfigError("the attribute schema has no attributes")
        bad = [n for n in self.names if not n or any(c in n for c in ",:\n")]
        if bad:
            raise ConfigError(f"attribute names may not be empty or contain ',', ':' or newlines: {bad}")

    @property
    def values(self) -> list[int]:
        return list(range(self.value_range[0], self.value_range[1] + 1))

    def clamp_round(self, raw: Mapping[str, float]) -> dict[str, int]:
        """Predicted (or human) values on the schema's integer scale, as NeMo's annotation does."""
        low, high = self.value_range
        return {n: int(min(max(round(float(raw[n])), low), high)) for n in self.names if n in raw}

    def label(self, values: Mapping[str, int]) -> str:
        """The label string in schema order; attributes without a value are left out."""
        return ",".join(f"{n}:{int(values[n])}" for n in self.names if n in values)

    def prefix(self, values: Mapping[str, int]) -> str:
        return f"{self.label_start}{self.label(values)}\n"

    def resolve(self, requested: Mapping[str, float], where: str = "attributes") -> dict[str, int]:
        """A full assignment for inference: checked against the schema, unset attributes from `defaults`."""
        unknown = sorted(set(requested) - set(self.names))
        if unknown:
            raise ConfigError(
                f"{where}: this model was trained with attributes {list(self.names)}; unknown {unknown}"
            )
        low, high = self.value_range
        resolved = dict(self.defaults)
        for name, value in requested.items():
            if float(value) != int(float(value)) or not low <= int(float(value)) <= high:
                raise ConfigError(
                    f"{where}.{name}={value}: values are integers in [{low}, {high}] for this model"
                )
            resolved[name] = int(float(value))
        missing = [n for n in self.names if n not in resolved]
        if missing:
            raise ConfigError(f"{where}: no value or default for {missing}; set them explicitly")
        return {n: resolved[n] for n in self.names}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> AttributeSchema:
        return cls(
            names=tuple(data["names"]),
            value_range=tuple(data["value_range"]),
            label_start=data["label_start"],
            defaults=dict(data.get("defaults", {})),
        )


def parse_assignments(items: Iterable[str], where: str) -> dict[str, int]:
    """`["quality:4", "humor:0"]` (the label's own syntax, easy to override on the command line) as a dict."""
    out = {}
    for item in items:
        name, sep, value = str(item).partition(":")
        if not sep or not name.strip() or not value.strip().lstrip("-").isdigit():
            raise ConfigError(f"{where}: {item!r} is not name:integer (e.g. quality:4)")
        out[name.strip()] = int(value)
    return out


def schema_names(preset: str, explicit: Sequence[str], data_name: str, found: Iterable[str]) -> list[str]:
    """The label order a run uses: explicit names, else the preset (auto = the data set's own)."""
    if explicit:
        return list(explicit)
    if preset == "auto":
        preset = PRESET_BY_DATA.get(data_name, "")
        if not preset:  # a custom data set: every attribute it labels, NeMo's order first
            found = set(found)
            ordered = [n for n in PRESETS["steerlm"] if n in found]
            return ordered + sorted(found - set(ordered))
    return list(PRESETS[preset])


def default_values(
    names: Sequence[str], value_range: tuple[int, int], labelled: Sequence[Mapping[str, int]]
) -> dict[str, int]:
    """Inference defaults: the good end for known attributes, else the most common training value; among
    equally common values (balanced data) the one nearest the middle of the range, not whichever came first."""
    low, high = value_range
    middle = (low + high) / 2
    defaults = {}
    for name in names:
        if name in HIGH_IS_GOOD:
            defaults[name] = high
        elif name in LOW_IS_GOOD:
            defaults[name] = low
        else:
            seen = Counter(int(v[name]) for v in labelled if name in v)
            top = max(seen.values(), default=0)
            tied = [value for value, count in seen.items() if count == top] or [(low + high) // 2]
            defaults[name] = min(tied, key=lambda value: (abs(value - middle), value))
    return defaults


def conditioned_messages(
    conversation: Conversation, schema: AttributeSchema
) -> tuple[list[dict[str, str]], dict[int, str]]:
    """Messages with each labelled assistant reply behind its label prefix, and those prefixes by turn index
    (they get no loss). A reply with none of the schema's attributes is kept without a label."""
    messages, prefixes = [], {}
    for i, turn in enumerate(conversation.turns):
        values = schema.clamp_round(turn.attributes) if turn.role == "assistant" else {}
        if values:
            prefixes[i] = schema.prefix(values)
            messages.append({"role": turn.role, "content": prefixes[i] + turn.content.lstrip()})
        else:
            messages.append(turn.as_message())
    return messages, prefixes


def steered_prompt(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict], schema: AttributeSchema, values: Mapping
) -> str:
    """The inference text: the chat up to the assistant header, then the label prefix the model was trained on."""
    opened = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return opened + schema.prefix(values)
