"""A byte-level tokenizer and random-weight Llama for tests and smoke runs: no download, built in milliseconds."""

from __future__ import annotations

from dataclasses import asdict

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from steerable.config.schema import TinyModelConfig

SPECIAL_TOKENS = ["<pad>", "<|im_start|>", "<|im_end|>"]

# ChatML, the same turn format as SmolLM2-Instruct, so code paths match the bundled model.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """One token per byte plus the ChatML specials; deterministic and offline."""
    byte_vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    specials = {tok: len(byte_vocab) + i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab = {**byte_vocab, **specials}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<|im_end|>", bos_token="<|im_start|>"
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def build_tiny_model(
    shape: TinyModelConfig, tokenizer: PreTrainedTokenizerFast, seed: int = 0
) -> LlamaForCausalLM:
    llama = {k: v for k, v in asdict(shape).items() if k != "seed"}  # the other fields are LlamaConfig's own
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        **llama,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model
