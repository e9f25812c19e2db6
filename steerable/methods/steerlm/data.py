"""The replies SteerLM learns from: the run's records as conversations, split, and the attributes they carry."""

from __future__ import annotations

from steerable.config.schema import ConfigError
from steerable.data.loaders import load_records, split_records
from steerable.data.records import Conversation, PreferencePair, Turn
from steerable.methods.base import RunContext
from steerable.methods.steerlm.attributes import schema_names
from steerable.methods.steerlm.config import SteerLMConfig


def as_conversation(record: Conversation | PreferencePair) -> Conversation:
    """Preference pairs (HH-RLHF) take part as their chosen reply, as in the paper's HH annotation."""
    if isinstance(record, Conversation):
        return record
    if isinstance(record, PreferencePair):
        return Conversation(turns=[*record.context, Turn("assistant", record.chosen)], id=record.id)
    raise TypeError(f"SteerLM cannot train on {type(record).__name__} records")


def data_split(ctx: RunContext) -> tuple[list[Conversation], list[Conversation]]:
    train, val = split_records(load_records(ctx.cfg.data), ctx.cfg.data)
    return [as_conversation(r) for r in train], [as_conversation(r) for r in val]


def found_attributes(conversations: list[Conversation]) -> set[str]:
    return {n for c in conversations for t in c.turns if t.role == "assistant" for n in t.attributes}


def run_names(ctx: RunContext, conversations: list[Conversation]) -> list[str]:
    method: SteerLMConfig = ctx.cfg.method
    names = schema_names(method.preset, method.attributes, ctx.cfg.data.name, found_attributes(conversations))
    if not names:
        raise ConfigError(
            f"no attributes to steer: data={ctx.cfg.data.name} has no labels; set method.attributes=[...]"
        )
    return names
