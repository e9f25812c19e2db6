"""Per-token log-probabilities, shared by the sampler and the RL/KL losses so both agree exactly."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import torch
from torch import nn

from steerable.backbone.adapters import reference_policy
from steerable.generation.base import Completion


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits)[tokens] in float32, without materialising the full log-softmax."""
    logits = logits.float()
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """The positions transformers' generate uses, so padded batches score like unpadded ones."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


def sequence_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
) -> torch.Tensor:
    """Teacher-forced log p(input_ids[:, t] | input_ids[:, :t]) as [B, T], zero where response_mask is 0.

    Output is aligned with ``input_ids`` (column 0 has no context and is always 0). Gradients flow, and
    the caller owns the model's mode: dropout in train mode makes these differ from sampling-time ones.
    Logits are computed only from the batch's first response position on (`logits_to_keep`, where the model
    takes it): the output layer over a 49k vocabulary at every prompt position was a fifth of the forward
    and most of its memory, for values that are masked out anyway.
    """
    width = input_ids.shape[1]
    start = first_scored_column(response_mask)
    extra = {"logits_to_keep": width - start + 1} if start > 1 and _takes_logits_to_keep(model) else {}
    logits = _teacher_forced(model, input_ids, attention_mask, **extra).logits
    return _response_logprobs(logits, input_ids, response_mask)


def _response_logprobs(
    logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """`sequence_logprobs`'s [B, T] output from logits kept for the last ``logits.shape[1]`` positions."""
    first = input_ids.shape[1] - logits.shape[1] + 1  # the column the first kept logit predicts
    shifted = token_logprobs(logits[:, :-1], input_ids[:, first:])
    aligned = torch.nn.functional.pad(shifted, (first, 0))
    return torch.where(response_mask.bool(), aligned, torch.zeros_like(aligned))


def policy_and_reference_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    policy: Callable[[], AbstractContextManager],
    hidden: Sequence[torch.Tensor | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`sequence_logprobs` under the ``policy`` context and, without gradient, of the reference policy (the
    adapters switched off, `reference_policy`).

    When every adapter is in the output layer and nothing below it trains (CLP's logit variant), the layers
    below are the reference's: one pass through them serves both, and only the output layer runs twice (the
    second full forward was about a third of a logit step's log-prob time, benchmarks/frozen_shared.py). The
    first such call for a model class checks the shortcut against two full passes and keeps the full passes
    for that class if they differ, e.g. for a model whose logits are more than its output layer.

    Once the shortcut is checked, `hidden` (each row's `Completion.hidden`, recorded while sampling, see
    `scores_from_sampled_hidden`) replaces even that one pass: the layers below the output already ran for
    these tokens when they were sampled, and only the output layer's parameters need a gradient.
    """
    split, verdict = _shortcut(model)
    if split is not None and verdict is not False:
        trunk, head = split
        sampled = _sampled_scorer(head, hidden, input_ids, response_mask) if verdict else None
        if sampled is not None:
            return _under_both(sampled, model, policy)
        states = _hidden_states(trunk, input_ids, attention_mask, response_mask)
        shared = _under_both(
            lambda: _response_logprobs(head(states), input_ids, response_mask), model, policy
        )
        if verdict:
            return shared
    full = _under_both(
        lambda: sequence_logprobs(model, input_ids, attention_mask, response_mask), model, policy
    )
    if verdict is None:  # first call for this model class: keep the shortcut only where it is exact
        _SHORTCUT_MATCHES[type(model.get_base_model())] = all(
            torch.allclose(a.detach(), b.detach(), rtol=1e-4, atol=1e-4)
            for a, b in zip(shared, full, strict=True)
        )
    return full


# per transformers model class: whether the one-trunk-pass shortcut gave two full passes' values
_SHORTCUT_MATCHES: dict[type, bool] = {}


def _shortcut(model: nn.Module) -> tuple[tuple[nn.Module, nn.Module] | None, bool | None]:
    """(`_trunk_and_head`, the model class's checked verdict: None while unchecked; False without a split)."""
    split = _trunk_and_head(model)
    return split, (_SHORTCUT_MATCHES.get(type(model.get_base_model())) if split else False)


def scores_from_sampled_hidden(model: nn.Module) -> bool:
    """Whether `policy_and_reference_logprobs` may use the output-layer inputs recorded while sampling
    (`GenerationSettings.keep_hidden`): only where the layers below the output are the reference's."""
    return _shortcut(model)[1] is not False


def _sampled_scorer(
    head: nn.Module,
    hidden: Sequence[torch.Tensor | None] | None,
    input_ids: torch.Tensor,
    response_mask: torch.Tensor,
) -> Callable[[], torch.Tensor] | None:
    """Scores each response from the output-layer inputs recorded while it was sampled, laid out as
    `sequence_logprobs`'s [B, T]; None unless every row has one input per response token."""
    lengths = response_mask.sum(dim=1)
    if hidden is None or len(hidden) != len(lengths):
        return None
    if any(h is None or len(h) != int(n) for h, n in zip(hidden, lengths, strict=True)):
        return None
    states = torch.nn.utils.rnn.pad_sequence(list(hidden), batch_first=True).to(input_ids.device)
    steps = torch.arange(states.shape[1], device=input_ids.device)
    valid = steps < lengths[:, None]
    first = response_mask.float().argmax(dim=1)  # each row's first response column
    columns = (first[:, None] + steps).clamp(max=input_ids.shape[1] - 1)
    tokens = input_ids.gather(1, columns)
    rows, targets = valid.nonzero(as_tuple=True)[0], columns[valid]

    def score() -> torch.Tensor:
        picked = token_logprobs(head(states), tokens)[valid]
        return picked.new_zeros(input_ids.shape).index_put((rows, targets), picked)

    return score


def _trunk_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """(layers below the output, output layer) of a PEFT model whose adapters are all in its output layer
    and whose other weights are frozen; None otherwise, and for an FSDP2-sharded model (its root gathers the
    output layer's shards only when the whole model is called)."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, PeftModel) or any(isinstance(m, FSDPModule) for m in model.modules()):
        return None
    inner = model.get_base_model()
    head = inner.get_output_embeddings()
    if not isinstance(head, LoraLayer):
        return None
    if any(_holds_an_adapter(m) for m in inner.modules() if m is not head):
        return None
    head_params = {id(p) for p in head.parameters()}
    if any(p.requires_grad for p in inner.parameters() if id(p) not in head_params):
        return None
    try:
        trunk = inner.get_decoder()
    except (AttributeError, ValueError):  # a model transformers cannot split
        return None
    return trunk, head


def _holds_an_adapter(module: nn.Module) -> bool:
    """A PEFT layer with an adapter in it (deleting an adapter leaves the layer's wrapper, empty)."""
    names = getattr(module, "adapter_layer_names", ())
    return any(len(getattr(module, name, ())) for name in names)


def _under_both(
    score: Callable[[], torch.Tensor], model: nn.Module, policy: Callable[[], AbstractContextManager]
) -> tuple[torch.Tensor, torch.Tensor]:
    with policy():
        logp = score()
    with torch.no_grad(), reference_policy(model):
        ref = score()
    return logp, ref


def _hidden_states(
    trunk: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """The last hidden states from the column before the first scored one on, without gradient."""
    with torch.no_grad():  # nothing below the output layer trains
        hidden = _teacher_forced(trunk, input_ids, attention_mask).last_hidden_state
    return hidden[:, first_scored_column(response_mask) - 1 :]


def _teacher_forced(module: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, **extra):
    """One forward over whole sequences, positioned as generate positions them, without a cache."""
    return module(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
        **extra,
    )


def first_scored_column(response_mask: torch.Tensor) -> int:
    """The first column any row scores (at least 1: column 0 has no context); 1 when no row scores any."""
    columns = response_mask.bool().any(dim=0).nonzero()
    return max(1, int(columns[0])) if len(columns) else 1


def _takes_logits_to_keep(model: nn.Module) -> bool:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _forward_takes_logits_to_keep(type(inner))


@functools.cache
def _forward_takes_logits_to_keep(model_class: type) -> bool:
    """Read once per model class: this runs on every log-prob forward of a training step."""
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def pack_completions(
    completions: Sequence[Completion], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask, response_mask) of prompt + kept response per completion.

    Feed the result to ``sequence_logprobs``; ``out[response_mask.bool()]`` then lines up with
    ``torch.cat([c.logprobs for c in completions])``.
    """
    if not completions:
        raise ValueError("pack_completions needs at least one completion")
    rows = [c.prompt_token_ids + c.token_ids for c in completions]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    response_mask = torch.zeros_like(input_ids)
    for i, (c, row) in enumerate(zip(completions, rows, strict=True)):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, : len(row)] = 1
        response_mask[i, len(c.prompt_token_ids) : len(row)] = 1
    return input_ids, attention_mask, response_mask
