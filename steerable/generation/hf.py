"""The Hugging Face backend: batched ``model.generate`` with left padding, KV cache and raw-logit log-probs.

Sampling itself (temperature, top-p, top-k, stop strings) is left to transformers; this module only
batches prompts, reads back the raw logits and decides where each response ends (see ``stops``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, TypeAlias

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase
from transformers.generation import utils as generation_utils

from steerable.backbone.adapters import merged_adapter
from steerable.budget import record_generated
from steerable.data.tokenize import pad_rows
from steerable.generation.base import Completion, GenerationSettings, Prompt, Sampler, fit_to_context
from steerable.generation.logprobs import token_logprobs
from steerable.generation.stops import cut_response

RowContext: TypeAlias = Callable[[list[int], int], AbstractContextManager]
# transformers renamed `past_key_values` to `cache` (5.2x); use whichever this version takes.
CACHE_KWARG = "cache" if "cache" in getattr(generation_utils, "ALL_CACHE_NAMES", ()) else "past_key_values"


def render_prompt(tokenizer: PreTrainedTokenizerBase, prompt: Prompt) -> str:
    """Chats go through the chat template with the assistant header opened; strings stay verbatim."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: Prompt) -> list[int]:
    """Prompt token ids, the same for every engine; no special tokens added (a chat template writes its own,
    a string is as given)."""
    return tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]


def end_token_ids(model: nn.Module, tokenizer: PreTrainedTokenizerBase, end_of_turn: str | None) -> list[int]:
    """Every id that closes a turn: the model's generation eos (int or list), the tokenizer's, and
    ``end_of_turn`` (ModelConfig.end_of_turn) when the chat format ends turns with another token."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = list(configured) if isinstance(configured, (list, tuple)) else [configured]
    ids.append(tokenizer.eos_token_id)
    if end_of_turn is not None:
        tid = tokenizer.convert_tokens_to_ids(end_of_turn)
        if tid is None or (tid == tokenizer.unk_token_id and end_of_turn != tokenizer.unk_token):
            raise ValueError(f"end_of_turn={end_of_turn!r} is not a token of this tokenizer")
        ids.append(tid)
    unique = list(dict.fromkeys(int(i) for i in ids if i is not None))
    if not unique:
        raise ValueError("no end-of-turn token: set tokenizer.eos_token or pass end_of_turn")
    return unique


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped by similar length (longest first, so an out-of-memory shows up on batch one)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the block, then each submodule's own previous flag back (not a blanket train())."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed the RNGs generate draws from, restoring the caller's RNG state afterwards."""
    if seed is None:
        yield
        return
    cuda = device.type == "cuda"
    index = device.index if device.index is not None else (torch.cuda.current_device() if cuda else 0)
    with torch.random.fork_rng(devices=[index] if cuda else []):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


class HFSampler(Sampler):
    """Generation with a transformers (or PEFT-wrapped) causal LM.

    Two speed-ups, both off by default here and on by default through `make_sampler` (`generation.*`):
    `merge_lora` folds a single active LoRA adapter into the weights for the call (restored exactly after);
    `share_prompt_cache` prefills each prompt once and copies its KV cache to its n samples."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        end_of_turn: str | None = None,
        merge_lora: bool = False,
        share_prompt_cache: bool = False,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.merge_lora = merge_lora
        self.share_prompt_cache = share_prompt_cache
        self.streamer: Any = (
            None  # a transformers streamer fed the text of single-row calls (steerable-serve)
        )
        self.end_ids = end_token_ids(model, tokenizer, end_of_turn)
        pad = tokenizer.pad_token_id
        self.pad_id: int = pad if pad is not None else self.end_ids[0]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, prompt: Prompt) -> list[int]:
        return encode_prompt(self.tokenizer, prompt)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def generate(
        self, prompts: Sequence[Prompt], settings: GenerationSettings, row_context: RowContext | None = None
    ) -> list[Completion]:
        """`row_context(prompt_indices, n)` wraps each batch's generate call: per-row conditioning (CLP's
        weightings) follows the rows wherever length sorting puts them."""
        encoded = fit_to_context([self.encode(p) for p in prompts], settings.max_new_tokens, self.model)
        by_prompt: list[list[Completion]] = [[] for _ in encoded]
        # no_grad rather than inference_mode: logprobs may later meet autograd tensors in a loss.
        merge = merged_adapter(self.model) if self.merge_lora and row_context is None else nullcontext()
        with eval_mode(self.model), torch.no_grad(), seeded(settings.seed, self.device), merge:
            for indices in length_sorted_batches([len(e) for e in encoded], settings.batch_size):
                context = (
                    row_context(indices, settings.num_return_sequences) if row_context else nullcontext()
                )
                with context:
                    batch = self._generate_batch(encoded, indices, settings, share=row_context is None)
                for completion in batch:
                    by_prompt[completion.prompt_index].append(completion)
        out = [c for group in by_prompt for c in group]
        record_generated(out)
        return out

    def _generate_kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": settings.max_new_tokens,
            "do_sample": settings.do_sample,
            "num_return_sequences": 1,  # rows are repeated by hand so greedy n > 1 also works
            "eos_token_id": self.end_ids,
            "pad_token_id": self.pad_id,
            "use_cache": True,
            "output_logits": True,
            "return_dict_in_generate": True,
        }
        if settings.do_sample:
            # top_k=0 switches transformers' default top-k of 50 off.
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k or 0)
        if settings.stop:
            # Early exit only; the authoritative cut is cut_response on the decoded text.
            kwargs.update(stop_strings=list(settings.stop), tokenizer=self.tokenizer)
        return kwargs

    def _prompt_cache(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n: int) -> Any:
        """The KV cache of every prompt token but the last (generate needs one uncached token to start
        from), computed once per prompt and repeated for its n rows; positions follow the left padding as
        generate's own would."""
        ids, mask = input_ids[:, :-1].to(self.device), attention_mask[:, :-1].to(self.device)
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        cache = out[CACHE_KWARG]
        cache.batch_repeat_interleave(n)
        return cache

    def _generate_batch(
        self, encoded: list[list[int]], indices: list[int], settings: GenerationSettings, share: bool = True
    ) -> list[Completion]:
        n = settings.num_return_sequences
        input_ids, attention_mask = pad_rows([encoded[i] for i in indices], self.pad_id, side="left")
        kwargs = self._generate_kwargs(settings)
        if self.streamer is not None and len(indices) * n == 1:
            kwargs["streamer"] = self.streamer
        # per-row conditioning (row_context) sees n rows per prompt, so the shared prefill is skipped there
        if share and n > 1 and self.share_prompt_cache and bool(attention_mask[:, :-1].any(dim=1).all()):
            kwargs[CACHE_KWARG] = self._prompt_cache(input_ids, attention_mask, n)
        input_ids = input_ids.repeat_interleave(n, dim=0).to(self.device)
        attention_mask = attention_mask.repeat_interleave(n, dim=0).to(self.device)
        with output_layer_inputs(self.model, settings.keep_hidden) as inputs:
            out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        new_tokens = out.sequences[:, input_ids.shape[1] :]
        steps = [token_logprobs(logits, new_tokens[:, t]) for t, logits in enumerate(out.logits)]
        logprobs = torch.stack(steps, dim=1).cpu()
        # one output-layer call per set of logits, or the recording cannot be lined up with the tokens
        hidden = torch.stack(inputs, dim=1) if inputs and len(inputs) == len(out.logits) else None
        completions = []
        for row, tokens in enumerate(new_tokens.tolist()):
            prompt_index = indices[row // n]
            cut = cut_response(tokens, self.decode, self.end_ids, self.pad_id, settings.stop)
            completions.append(
                Completion(
                    prompt_index=prompt_index,
                    text=cut.text,
                    token_ids=tokens[: cut.num_tokens],
                    logprobs=logprobs[row, : cut.num_tokens].clone(),
                    finish_reason=cut.finish_reason,
                    prompt_token_ids=list(encoded[prompt_index]),
                    hidden=hidden[row, : cut.num_tokens].clone() if hidden is not None else None,
                )
            )
        return completions


@contextmanager
def output_layer_inputs(model: nn.Module, keep: bool) -> Iterator[list[torch.Tensor]]:
    """Records, per forward inside the block, the output layer's input at the last position (the one the
    next token's logits come from): [rows, hidden size] each. Nothing is recorded unless `keep`."""
    recorded: list[torch.Tensor] = []
    head = model.get_output_embeddings() if keep else None
    if head is None:
        yield recorded
        return

    def record(module: nn.Module, args: tuple) -> None:
        recorded.append(args[0][:, -1].detach().clone())  # a copy: a prefill's input is the whole prompt

    handle = head.register_forward_pre_hook(record)
    try:
        yield recorded
    finally:
        handle.remove()
