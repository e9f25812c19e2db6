"""The annotator: the attribute prediction model labelling every assistant turn of a conversation, and how well
its labels agree with the data's own."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace

import numpy as np
import torch

from steerable.config.schema import ConfigError
from steerable.data.records import Conversation, Turn
from steerable.methods.base import RunContext
from steerable.methods.reward_models.evaluate import score_ids
from steerable.methods.steerlm.attributes import AttributeSchema
from steerable.rewards.scoring_model import load_scorer, render_scored


class Annotator:
    """The APM as SteerLM's labeller: predictions clamped to the range and rounded (NeMo's annotate script)."""

    def __init__(
        self,
        apm_path: str,
        names: list[str],
        value_range: Sequence[int],
        batch_size: int = 8,
        device: torch.device | str = "cpu",
        autocast: Callable[[], AbstractContextManager] = nullcontext,
    ) -> None:
        self.model, self.tokenizer, self.meta = load_scorer(apm_path)
        self.model.to(device)
        missing = [n for n in names if n not in self.meta.names]
        if missing:
            raise ConfigError(
                f"the attribute model at {apm_path} predicts {self.meta.names}; the run needs {missing} "
                "(the run's attributes come from its data= and method.attributes / method.preset: pass the "
                "data the attribute model was trained on)"
            )
        self.schema = AttributeSchema(tuple(names), (int(value_range[0]), int(value_range[1])))
        self.columns = [self.meta.names.index(n) for n in names]
        self.batch_size = batch_size
        self.autocast = autocast

    @classmethod
    def for_run(cls, ctx: RunContext, apm_path: str, names: list[str]) -> Annotator:
        method = ctx.cfg.method
        return cls(apm_path, names, method.value_range, method.eval_batch_size, ctx.device, ctx.autocast)

    def raw(self, contexts: list[list[dict]], replies: list[str]) -> np.ndarray:
        """Unrounded predictions [N, outputs of the APM] (used as a measurement in the steerability eval)."""
        sequences = [
            render_scored(self.tokenizer, c, r, self.meta.max_length)
            for c, r in zip(contexts, replies, strict=True)
        ]
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # less padding per batch
        with self.autocast():
            scores = score_ids(
                self.model, [sequences[i] for i in order], self.tokenizer.pad_token_id, self.batch_size
            )
        raw = np.empty((len(sequences), len(self.meta.names)))
        raw[order] = scores.numpy()
        return raw

    def predict(self, contexts: list[list[dict]], replies: list[str]) -> list[dict[str, int]]:
        raw = self.raw(contexts, replies)[:, self.columns]
        return [self.schema.clamp_round(dict(zip(self.schema.names, row, strict=True))) for row in raw]

    def annotate(self, conversations: list[Conversation]) -> list[Conversation]:
        """Every assistant turn gets predicted labels; identical (context, reply) pairs are scored once."""
        index: dict[str, int] = {}
        contexts, replies = [], []
        for conv in conversations:
            for key, context, reply in _assistant_turns(conv):
                if key not in index:
                    index[key] = len(replies)
                    contexts.append(context)
                    replies.append(reply)
        predictions = self.predict(contexts, replies) if replies else []
        annotated = []
        for conv in conversations:
            labels = iter([predictions[index[key]] for key, _, _ in _assistant_turns(conv)])
            turns = [
                Turn(t.role, t.content, dict(next(labels)) if t.role == "assistant" else {})
                for t in conv.turns
            ]
            annotated.append(replace(conv, turns=turns))
        return annotated


def _assistant_turns(conv: Conversation):
    """(dedup key, context messages, reply) of each assistant turn, in order."""
    for i, turn in enumerate(conv.turns):
        if turn.role == "assistant":
            context = [t.as_message() for t in conv.turns[:i]]
            yield json.dumps([context, turn.content]), context, turn.content


def label_agreement(original: list[Conversation], annotated: list[Conversation], names: list[str]) -> dict:
    """How far the APM's labels are from the data's own, per attribute (the paper's denoising step)."""
    out = {}
    for name in names:
        pairs = [
            (a.attributes[name], round(o.attributes[name]))
            for oc, ac in zip(original, annotated, strict=True)
            for o, a in zip(oc.turns, ac.turns, strict=True)
            if o.role == "assistant" and name in o.attributes and name in a.attributes
        ]
        if pairs:
            diffs = np.array([abs(p - h) for p, h in pairs], dtype=float)
            out[name] = {
                "n": len(pairs),
                "exact": float(np.mean(diffs == 0)),
                "mean_abs_diff": float(diffs.mean()),
            }
    return out
