"""Backbone: LoRA wrapping, reference policy = adapters off, named adapters, adapter-only save, merged export."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from steerable.backbone import load_backbone
from steerable.backbone.adapters import (
    add_adapter,
    count_parameters,
    export_merged,
    reference_policy,
    save_model,
)
from steerable.config.schema import LoraConfig, ModelConfig, ModelSource


def tiny_config(**lora) -> ModelConfig:
    return ModelConfig(
        name="tiny",
        source=ModelSource["tiny"],
        lora=LoraConfig(
            **{"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], **lora}
        ),
    )


def perturb_lora(model: torch.nn.Module, seed: int = 0) -> None:
    """LoRA B starts at zero (adapter = identity); give it weights so adapter on/off differ."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


@pytest.fixture
def batch():
    return torch.randint(0, 250, (2, 12), generator=torch.Generator().manual_seed(1))


def test_lora_freezes_base_and_trains_only_adapters() -> None:
    model, _ = load_backbone(tiny_config())
    assert isinstance(model, PeftModel)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    counts = count_parameters(model)
    assert counts.trainable == sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)


def test_full_finetuning_when_lora_disabled() -> None:
    model, _ = load_backbone(tiny_config(enabled=False))
    assert not isinstance(model, PeftModel)
    assert all(p.requires_grad for p in model.parameters())


def test_reference_policy_is_the_base_model(batch) -> None:
    model, _ = load_backbone(tiny_config())
    base_logits = model.get_base_model()(batch).logits.clone()
    perturb_lora(model)
    with torch.no_grad():
        adapted = model(batch).logits
        with reference_policy(model):
            reference = model(batch).logits
        again = model(batch).logits
    assert not torch.allclose(adapted, base_logits, atol=1e-4)
    torch.testing.assert_close(reference, base_logits)
    torch.testing.assert_close(again, adapted)  # adapters back on after the block


def test_named_adapters_share_one_base(batch) -> None:
    model, _ = load_backbone(tiny_config())
    add_adapter(model, "expert_b", tiny_config().lora)
    perturb_lora(model, seed=3)
    with torch.no_grad():
        model.set_adapter("default")
        out_a = model(batch).logits
        model.set_adapter("expert_b")
        out_b = model(batch).logits
    assert not torch.allclose(out_a, out_b, atol=1e-4)
    plain, _ = load_backbone(tiny_config(enabled=False))
    base_numel = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    assert base_numel == count_parameters(plain).total  # one base in memory, not one per adapter


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ["q_proj", "lm_head"]])
def test_adapter_only_checkpoint_round_trip(tmp_path, batch, targets) -> None:
    """Only the adapter is saved, also with a LoRA on the output layer (CLP logit), where PEFT's default would
    add the whole embedding matrix the LoRA never changes (113 MB per copy for SmolLM2)."""
    model, tok = load_backbone(tiny_config(target_modules=targets))
    perturb_lora(model)
    target = save_model(model, tok, tmp_path / "final", metadata={"attributes": ["a", "b"]})
    weights = load_file(target / "adapter_model.safetensors")
    assert weights and all("lora_" in k for k in weights)
    assert json.loads((target / "steerable.json").read_text())["attributes"] == ["a", "b"]
    assert not list(tmp_path.glob(".final.tmp-*"))
    loaded, _ = load_backbone(tiny_config(target_modules=targets), adapter_dir=target)
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).logits, model(batch).logits)


def test_merged_export_loads_in_plain_transformers_with_same_logits(tmp_path, batch) -> None:
    model, tok = load_backbone(tiny_config())
    perturb_lora(model)
    target = export_merged(model, tok, tmp_path / "merged")
    assert not (target / "adapter_config.json").exists()
    plain = AutoModelForCausalLM.from_pretrained(str(target))
    assert not isinstance(plain, PeftModel)
    assert AutoTokenizer.from_pretrained(str(target)).chat_template == tok.chat_template
    with torch.no_grad():
        torch.testing.assert_close(plain(batch).logits, model(batch).logits, atol=1e-5, rtol=1e-4)
    assert isinstance(model, PeftModel) and any("lora_" in n for n, _ in model.named_parameters())


def test_merge_adapters_warm_starts_the_base_from_a_run(tmp_path, batch) -> None:
    """model.merge_adapters folds an SFT run's adapter into the weights: the loaded base computes what the
    adapted model did, new LoRA adapters start on top of it, and a folder without an adapter is refused."""
    from steerable.backbone.loading import ModelLoadError

    model, tok = load_backbone(tiny_config())
    perturb_lora(model)
    save_model(model, tok, tmp_path / "sft_run" / "checkpoints" / "final", metadata={})
    with torch.no_grad():
        adapted = model(batch).logits
    for entry in (tmp_path / "sft_run", tmp_path / "sft_run" / "checkpoints" / "final"):
        cfg = tiny_config()
        cfg.merge_adapters = [str(entry)]
        warm, _ = load_backbone(cfg)
        with torch.no_grad():
            with reference_policy(warm):  # the new adapter off: the warm-started base itself
                base = warm(batch).logits
            fresh = warm(batch).logits  # a fresh LoRA starts as the identity
        torch.testing.assert_close(base, adapted, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(fresh, adapted, atol=1e-5, rtol=1e-4)
    cfg = tiny_config()
    cfg.merge_adapters = [str(tmp_path)]
    with pytest.raises(ModelLoadError, match=r"model.merge_adapters: .* holds no LoRA adapter"):
        load_backbone(cfg)
