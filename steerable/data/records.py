"""Record types every loader produces and every method consumes.

Loaders turn files of many formats into these three shapes; nothing downstream knows the source format.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from steerable.errors import UserError

ROLES = ("system", "user", "assistant")


@dataclass
class Turn:
    role: str
    content: str
    # Attribute labels of this turn (assistant turns), on the data set's own scale, e.g. OASST's 0..4.
    attributes: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"turn role must be one of {ROLES}, got {self.role!r}")

    def as_message(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass
class Conversation:
    """A chat thread; training targets are its assistant turns."""

    turns: list[Turn]
    id: str = ""
    source: str = ""
    # Records sharing a group (one OASST message tree, one HelpSteer2 prompt) stay on the same side of a
    # train/val split, so held-out loss is not measured on near-copies of training text. "" = its own group.
    group: str = ""

    @property
    def messages(self) -> list[dict[str, str]]:
        return [t.as_message() for t in self.turns]

    @property
    def last_assistant(self) -> Turn | None:
        return next((t for t in reversed(self.turns) if t.role == "assistant"), None)


@dataclass
class PreferencePair:
    """Two responses to the same context; `chosen` is preferred."""

    context: list[Turn]  # the conversation up to (not including) the compared assistant reply
    chosen: str
    rejected: str
    id: str = ""
    source: str = ""

    @property
    def prompt_messages(self) -> list[dict[str, str]]:
        return [t.as_message() for t in self.context]


@dataclass
class PromptRecord:
    """A prompt to generate from (evaluation sets, online sampling)."""

    messages: list[dict[str, str]]
    id: str = ""
    category: str = ""
    reference: str | None = None  # a reference answer when the set has one

    @property
    def text(self) -> str:
        return self.messages[-1]["content"]


Messages = list[dict[str, str]]


def as_messages(record: Conversation | PreferencePair) -> Messages:
    """The conversation a record teaches: a conversation as is, or a pair's context plus its chosen reply."""
    if isinstance(record, Conversation):
        return record.messages
    if isinstance(record, PreferencePair):
        return [*record.prompt_messages, {"role": "assistant", "content": record.chosen}]
    raise TypeError(f"SFT cannot train on {type(record).__name__} records")


def prompt_of(record: Conversation | PreferencePair | PromptRecord) -> Messages:
    """The context before the last assistant reply: what a held-out sample is generated from."""
    if isinstance(record, PromptRecord):
        return record.messages
    messages = as_messages(record)
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last]


def user_text(messages: list[dict]) -> str:
    """The last user message: what text rewards score a reply against."""
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")


class DataFormatError(UserError, ValueError):
    """Malformed input; the message says file, line and field."""

    def __init__(self, path: str, line: int | None, field_name: str | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else path
        what = f" field {field_name!r}:" if field_name else ""
        super().__init__(f"{where}:{what} {problem}")
        self.path, self.line, self.field_name = path, line, field_name
