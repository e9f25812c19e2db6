"""vLLM as a generation engine, colocated in the training process (as TRL's colocate mode).

The engine serves the base weights; the policy being trained reaches it on every `generate` call:
- LoRA policies: when the active adapter's tensors changed since the last push (their in-place version
  counters moved, i.e. an optimizer step ran), the adapter is saved and registered as a new adapter version;
  vLLM applies it per request, and the previous version is dropped.
- Full fine-tuning: changed weights are loaded into the engine's model in place (`load_weights`).
Prompts go in as token ids rendered by our own chat template, and responses are cut by the same
`cut_response` the Hugging Face engine uses, so `Completion` means exactly the same thing for both engines.
One engine is started per process and base model (starting one takes 40-100 s on a CPU).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from steerable.backbone.adapters import ADAPTER_ONLY
from steerable.budget import record_generated
from steerable.config.base import ConfigError
from steerable.config.generation import INSTALL_HINT, GenerationConfig
from steerable.generation.base import Completion, GenerationSettings, Prompt, Sampler, fit_to_context
from steerable.generation.hf import encode_prompt, end_token_ids
from steerable.generation.stops import cut_response

log = logging.getLogger(__name__)

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def require_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return vllm


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The base network's weights under transformers' own names: PEFT's LoRA tensors dropped and its
    `base_layer.` wrapping removed (what vLLM's `load_weights` and a plain model folder expect)."""
    from peft import PeftModel

    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    out = {}
    for name, tensor in inner.state_dict().items():
        if "lora_" in name:
            continue
        out[name.replace(".base_layer.", ".")] = tensor
    return out


def base_folder(model: nn.Module, tokenizer: PreTrainedTokenizerBase, scratch: Path) -> Path:
    """A model folder vLLM can start from: the one the base was loaded from when it matches the loaded
    network, else the current base weights written to `scratch` (random-weight test models, resized vocab)."""
    from peft import PeftModel

    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    source = Path(getattr(inner.config, "_name_or_path", "") or "/nonexistent")
    if (source / "config.json").is_file() and any(source.glob("*.safetensors")):
        stored = json.loads((source / "config.json").read_text())
        if stored.get("vocab_size") == inner.config.vocab_size:
            return source
    from transformers import AutoModelForCausalLM

    target = scratch / "base"
    plain = AutoModelForCausalLM.from_config(inner.config)
    plain.load_state_dict(plain_state_dict(model), strict=False)
    plain.tie_weights()
    plain.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return target


class _Engine:
    """One vLLM `LLM` over one base model, with the adapter version it currently serves."""

    def __init__(self, model: nn.Module, tokenizer, config: GenerationConfig, lora_rank: int | None) -> None:
        vllm = require_vllm()
        self.scratch = Path(tempfile.mkdtemp(prefix="steerable-vllm-"))
        weakref.finalize(self, shutil.rmtree, self.scratch, True)  # adapter versions, exported base
        on_gpu = next(model.parameters()).device.type == "cuda"
        # colocated: the engine core runs in this process, so weights can be handed over in memory
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if not on_gpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(config.cpu_kv_cache_gb))
            # else vLLM drops this whole process (training included) to one torch thread
            os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
        eager = (not on_gpu) if config.enforce_eager is None else config.enforce_eager
        dtype = next(model.parameters()).dtype
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        kwargs: dict[str, Any] = {
            "model": str(base_folder(model, tokenizer, self.scratch)),
            "dtype": str(dtype).removeprefix("torch."),
            "enforce_eager": eager,
            "max_model_len": min(config.max_model_len, positions) if positions else config.max_model_len,
            "logprobs_mode": "raw_logprobs",  # untempered log-softmax, as the Completion contract says
            "seed": 0,
        }
        if on_gpu:
            kwargs["gpu_memory_utilization"] = config.gpu_memory_utilization
        else:
            # A seeded request whose prefill is split across steps fails on CPU generators in vLLM 0.32
            # ("CPU Generator does not use offset"): prefill every prompt whole.
            kwargs.update(
                enable_chunked_prefill=False, max_num_batched_tokens=max(kwargs["max_model_len"], 8192)
            )
        if lora_rank is not None:
            rank = next((r for r in VLLM_LORA_RANKS if r >= lora_rank), None)
            if rank is None:
                raise ConfigError(
                    f"model.lora.r={lora_rank} is above vLLM's largest LoRA rank {VLLM_LORA_RANKS[-1]}"
                )
            kwargs.update(enable_lora=True, max_lora_rank=rank, max_loras=1)
        log.info(
            "starting vLLM %s (%s, eager=%s, lora=%s)", vllm.__version__, kwargs["dtype"], eager, lora_rank
        )
        self.llm = vllm.LLM(**kwargs)
        self.lora_request: Any = None
        self.fingerprint: tuple | None = None
        self.versions = 0

    def sync_adapter(self, model: nn.Module, name: str) -> Any:
        """The LoRA request for the adapter's current tensors, pushed as a new version when they changed."""
        from vllm.lora.request import LoRARequest

        params = [p for n, p in model.named_parameters() if "lora_" in n and f".{name}." in n]
        fingerprint = (name, *(p._version for p in params), *(id(p) for p in params))
        if fingerprint == self.fingerprint and self.lora_request is not None:
            return self.lora_request
        self.versions += 1
        folder = self.scratch / f"adapter-{self.versions}"
        model.save_pretrained(folder, selected_adapters=[name], safe_serialization=True, **ADAPTER_ONLY)
        path = folder if (folder / "adapter_config.json").is_file() else folder / name
        if self.lora_request is not None:  # the previous version is never asked for again
            self.llm.llm_engine.remove_lora(self.lora_request.lora_int_id)
            shutil.rmtree(self.scratch / f"adapter-{self.versions - 1}", ignore_errors=True)
        self.lora_request = LoRARequest(f"policy-v{self.versions}", self.versions, str(path))
        self.fingerprint = fingerprint
        return self.lora_request

    def sync_weights(self, model: nn.Module, adapter: str | None = None) -> None:
        """Load the network's weights (with `adapter` merged in, when given) into the engine's model, in
        memory, when they differ from what it holds: full fine-tuning, and LoRA served merged."""
        from steerable.backbone.adapters import merged_adapter

        params = list(model.parameters())
        fingerprint = ("weights", adapter, *(p._version for p in params), *(id(p) for p in params))
        if fingerprint == self.fingerprint:
            return
        with merged_adapter(model) if adapter is not None else nullcontext():
            weights = [(n, t.detach()) for n, t in plain_state_dict(model).items()]
            # reload_weights, not the model's load_weights: it also redoes the post-load processing
            # (the CPU backend repacks linear weights, whose repacked tensors load_weights cannot fill)
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights)})
        self.llm.reset_prefix_cache()
        self.fingerprint = fingerprint


class _Current:
    """The one engine a process keeps: for the model it was started for (held weakly, so a new model with a
    recycled id() never meets a stale engine) and the LoRA rank it serves; starting another closes it."""

    engine: _Engine | None = None
    model: weakref.ref | None = None
    key: tuple = ()


def engine_for(model: nn.Module, tokenizer, config: GenerationConfig, lora_rank: int | None) -> _Engine:
    key = (lora_rank, config.max_model_len, config.cpu_kv_cache_gb, config.gpu_memory_utilization)
    same = _Current.model is not None and _Current.model() is model and _Current.key == key
    if not same:
        if _Current.engine is not None:
            log.info("closing the vLLM engine of another model")
            _Current.engine = None  # its LLM, KV cache and weights go with it
            gc.collect()
        _Current.engine = _Engine(model, tokenizer, config, lora_rank)
        _Current.model, _Current.key = weakref.ref(model), key
    return _Current.engine


class VLLMSampler(Sampler):
    """The `Sampler` contract over vLLM, synced to the current weights of `model` on every call."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        end_of_turn: str | None = None,
        config: GenerationConfig | None = None,
    ) -> None:
        require_vllm()
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or GenerationConfig(engine="vllm")
        self.end_ids = end_token_ids(model, tokenizer, end_of_turn)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def generate(
        self, prompts: Sequence[Prompt], settings: GenerationSettings, row_context: Any = None
    ) -> list[Completion]:
        if row_context is not None:
            raise ConfigError(
                "generation.engine=vllm cannot mix adapters per example (CLP's parameter conditioning); "
                "use generation.engine=hf"
            )
        from peft import PeftModel

        from steerable.backbone.adapters import adapters_disabled, single_active_adapter

        encoded = fit_to_context(
            [encode_prompt(self.tokenizer, p) for p in prompts], settings.max_new_tokens, self.model
        )
        adapter = single_active_adapter(self.model)
        is_peft = isinstance(self.model, PeftModel)
        if is_peft and adapter is None and not adapters_disabled(self.model):
            raise ConfigError(
                "generation.engine=vllm serves one active LoRA adapter at a time; use generation.engine=hf"
            )
        merge = self.config.vllm_merge_lora
        merge = next(self.model.parameters()).device.type != "cuda" if merge is None else merge
        lora = None
        if is_peft and not merge:
            rank = self.model.peft_config[adapter].r if adapter is not None else None
            engine = engine_for(self.model, self.tokenizer, self.config, rank)
            lora = engine.sync_adapter(self.model, adapter) if adapter is not None else None
        else:
            engine = engine_for(self.model, self.tokenizer, self.config, None)
            engine.sync_weights(self.model, adapter)
        params = [self._params(settings, index) for index in range(len(encoded))]
        results = engine.llm.generate(
            [{"prompt_token_ids": ids} for ids in encoded], params, use_tqdm=False, lora_request=lora
        )
        out = [
            completion
            for index, result in enumerate(results)
            for completion in self._completions(
                index, encoded[index], result, settings.stop, settings.num_return_sequences
            )
        ]
        record_generated(out)
        return out

    def _params(self, settings: GenerationSettings, index: int) -> Any:
        from vllm import SamplingParams

        sampling = settings.do_sample
        return SamplingParams(
            n=settings.num_return_sequences if sampling else 1,  # greedy: one reply, copied n times
            temperature=settings.temperature if sampling else 0.0,
            top_p=settings.top_p if sampling else 1.0,
            top_k=(settings.top_k or 0) if sampling else 0,
            max_tokens=settings.max_new_tokens,
            seed=None if settings.seed is None else settings.seed + index,
            stop=list(settings.stop) or None,
            include_stop_str_in_output=True,  # the cut is ours (cut_response), as for the HF engine
            stop_token_ids=list(self.end_ids),
            logprobs=0,
            skip_special_tokens=True,
        )

    def _completions(
        self, index: int, prompt_ids: list[int], result: Any, stop: Sequence[str], n: int
    ) -> list[Completion]:
        out = []
        samples = sorted(result.outputs, key=lambda o: o.index)
        if len(samples) == 1:  # greedy decoding asked once for n identical replies
            samples = samples * n
        for sample in samples:
            tokens = list(sample.token_ids)
            logprobs = [
                step[token].logprob for step, token in zip(sample.logprobs or [], tokens, strict=True)
            ]
            cut = cut_response(tokens, self.decode, self.end_ids, None, stop)
            out.append(
                Completion(
                    prompt_index=index,
                    text=cut.text,
                    token_ids=tokens[: cut.num_tokens],
                    logprobs=torch.tensor(logprobs[: cut.num_tokens], dtype=torch.float32),
                    finish_reason=cut.finish_reason,
                    prompt_token_ids=list(prompt_ids),
                )
            )
        return out
