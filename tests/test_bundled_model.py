"""The bundled SmolLM2 GGUF: converted once, cached as safetensors, loads fast and generates."""

from __future__ import annotations

import time

import pytest

from steerable.backbone.loading import ModelLoadError, bundled_gguf_path, convert_gguf, load_tokenizer
from steerable.config.schema import ModelConfig, ModelSource


def bundled_or_skip():
    try:
        return bundled_gguf_path()
    except ModelLoadError as err:
        pytest.skip(str(err))


@pytest.mark.slow
def test_gguf_converted_once_then_cached(tmp_path, monkeypatch) -> None:
    gguf = bundled_or_skip()
    monkeypatch.setenv("STEERABLE_CACHE", str(tmp_path))
    first = convert_gguf(gguf)
    assert (first / "model.safetensors").is_file() and (first / "config.json").is_file()
    started = time.perf_counter()
    assert convert_gguf(gguf) == first
    assert time.perf_counter() - started < 1.0
    tok = load_tokenizer(ModelConfig(name="smollm2-135m", source=ModelSource["gguf"]))
    assert tok.eos_token == "<|im_end|>" and tok.chat_template


def test_missing_gguf_file_names_the_key(tmp_path) -> None:
    cfg = ModelConfig(name="x", source=ModelSource["gguf"], gguf_file=str(tmp_path / "none.gguf"))
    with pytest.raises(ModelLoadError, match=r"model\.gguf_file"):
        load_tokenizer(cfg)
