"""The bundled SmolLM2 GGUF: converted once, cached as safetensors, loads fast and generates."""

from __future__ import annotations

import pytest
import torch

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
    torch.manual_seed(7)
    before = torch.random.get_rng_state()
    first = convert_gguf(gguf)
    assert (first / "model.safetensors").is_file() and (first / "config.json").is_file()
    # the converting run must draw the same random numbers afterwards as a cached one (LoRA init, dropout)
    assert torch.equal(torch.random.get_rng_state(), before)

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("converted again although the cache is complete")

    monkeypatch.setattr("steerable.backbone.loading._convert_into", no_second_conversion)
    assert convert_gguf(gguf) == first
    tok = load_tokenizer(ModelConfig(name="smollm2-135m", source=ModelSource["gguf"]))
    assert tok.eos_token == "<|im_end|>" and tok.chat_template


def test_missing_gguf_file_names_the_key(tmp_path) -> None:
    cfg = ModelConfig(name="x", source=ModelSource["gguf"], gguf_file=str(tmp_path / "none.gguf"))
    with pytest.raises(ModelLoadError, match=r"model\.gguf_file"):
        load_tokenizer(cfg)
