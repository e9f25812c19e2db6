"""`steerable-export`: a run as a Hugging Face folder that plain transformers loads and that generates what
`steerable-generate` generates, with a model card saying how to set the controls in a plain prompt."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from steerable.backbone.adapters import wrap_lora
from steerable.backbone.tiny import build_tiny_model, build_tiny_tokenizer
from steerable.config.schema import ConfigError, LoraConfig, TinyModelConfig
from steerable.generation import GenerationSettings
from steerable.methods.registry import load_policy
from steerable.policies.base import Network
from steerable.policies.export import export_policy
from steerable.policies.plain import PlainPolicy
from tests.test_cli import cli

PROMPT = [{"role": "user", "content": "Any tips for running?"}]
CONTROLS = {"attributes.verbosity": 4, "attributes.positivity": 1}


def test_merged_export_loads_with_plain_transformers_and_generates_what_the_policy_does(
    steerlm_run, tmp_path
) -> None:
    out = tmp_path / "exported"
    done = cli("export", f"run={steerlm_run}", f"out={out}", "merged=true", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()

    policy = load_policy(steerlm_run)
    (want,) = policy.generate([PROMPT], CONTROLS, GenerationSettings(max_new_tokens=8))
    model = AutoModelForCausalLM.from_pretrained(out)  # no peft, no steerable
    tokenizer = AutoTokenizer.from_pretrained(out)
    text = policy.plain_prompt(PROMPT, policy.resolve(CONTROLS))
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        got = model.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1] :].tolist()
    assert want.token_ids and got[: len(want.token_ids)] == want.token_ids

    card = (out / "README.md").read_text()
    assert "| `attributes.verbosity` |" in card and "<extra_id_2>verbosity:" in card
    assert "| method | steerlm |" in card
    # the card's own snippet, run as a user would, generates the defaults' reply
    snippet = card.split("```python\n")[1].split("```")[0].replace("<this folder>", str(out))
    namespace: dict = {}
    exec(snippet.replace("max_new_tokens=128", "max_new_tokens=8"), namespace)
    (default,) = policy.generate([PROMPT], {}, GenerationSettings(max_new_tokens=8))
    assert default.token_ids and namespace["reply"].tolist()[: len(default.token_ids)] == default.token_ids


def test_adapter_export_records_its_base_and_leaves_no_partial_folder(
    steerlm_run, tmp_path, monkeypatch
) -> None:
    policy = load_policy(steerlm_run)
    out = export_policy(policy, steerlm_run, tmp_path / "adapter", merged=False)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] is None  # the random tiny base has no hub id
    assert "not on the Hugging Face Hub" in (out / "README.md").read_text()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(policy.tokenizer, "save_pretrained", broken)
    with pytest.raises(OSError):
        export_policy(policy, steerlm_run, tmp_path / "half", merged=True)
    assert not (tmp_path / "half").exists() and not list(tmp_path.glob(".half*"))


def test_mixed_adapter_policies_are_refused_with_the_reason() -> None:
    tokenizer = build_tiny_tokenizer()
    model = wrap_lora(
        build_tiny_model(TinyModelConfig(), tokenizer), LoraConfig(r=4, target_modules=["q_proj"])
    )
    model.add_adapter("other", model.peft_config["default"])
    model.base_model.set_adapter(["default", "other"])
    policy = PlainPolicy(Network(model, tokenizer, "run=somewhere", "clp"))
    with pytest.raises(ConfigError, match="mixes 2 adapters per request"):
        policy.check_single_network()


def test_prompt_conditioned_clp_keeps_its_weights_as_a_dial_in_the_plain_prompt() -> None:
    from steerable.methods.clp.conditioning import PromptConditioning
    from steerable.methods.clp.policy import WeightedPolicy

    tokenizer = build_tiny_tokenizer()
    model = wrap_lora(
        build_tiny_model(TinyModelConfig(), tokenizer), LoraConfig(r=4, target_modules=["q_proj"])
    )
    conditioning = PromptConditioning(["verbosity", "positivity"])
    policy = WeightedPolicy(Network(model, tokenizer, "run=x", "clp"), conditioning, conditioning.names)
    assert not policy.controls_in_weights
    text = policy.plain_prompt(PROMPT, policy.resolve({"weights": [0.25, 0.75]}))
    assert "Reward weights: verbosity=0.25, positivity=0.75" in text and text.endswith(
        tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)[-20:]
    )
    assert not any("lora_" in name for name, _ in policy.network_for({}).named_parameters())


def test_clp_exports_one_weighting_as_merged_weights_or_one_adapter_equal_to_the_mixture(
    clp_run, tmp_path
) -> None:
    from peft import PeftModel

    from steerable.backbone.loading import load_base_model
    from steerable.policies.runs import run_model_config

    weighting = [0.2, 0.8]
    out = tmp_path / "clp_export"
    done = cli("export", f"run={clp_run}", f"out={out}", "merged=true", "weights=[0.2,0.8]", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    policy = load_policy(clp_run)
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([policy.tokenizer("Any tips for running?")["input_ids"]])
    with torch.no_grad():
        got = model(ids).logits
        with policy.conditioning.mixer.weighted(torch.tensor([weighting])):
            want = policy.model(ids).logits
        with policy.conditioning.mixer.weighted(torch.tensor([[0.8, 0.2]])):
            other = policy.model(ids).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert (other - want).abs().max() > 1e-3  # the weighting matters, so matching it is not an accident
    card = (out / "README.md").read_text()
    assert "| method | clp |" in card and "Fixed in these weights" in card and "0.8" in card

    adapter_out = export_policy(
        policy, clp_run, tmp_path / "adapter", merged=False, controls={"weights": weighting}
    )
    assert json.loads((adapter_out / "adapter_config.json").read_text())["r"] > 0
    base = load_base_model(run_model_config(clp_run), policy.tokenizer)
    with torch.no_grad():
        from_adapter = PeftModel.from_pretrained(base, adapter_out).eval()(ids).logits
    torch.testing.assert_close(from_adapter, want, atol=1e-4, rtol=1e-4)


def test_export_refuses_settings_that_do_not_fit_the_policy(clp_run, steerlm_run, tmp_path) -> None:
    clp = load_policy(clp_run)
    with pytest.raises(ConfigError, match="sum to 1"):
        export_policy(clp, clp_run, tmp_path / "b", merged=True, controls={"weights": [0.5, 0.6]})
    steerlm = load_policy(steerlm_run)
    with pytest.raises(ConfigError, match="takes its controls in the prompt"):
        export_policy(steerlm, steerlm_run, tmp_path / "c", merged=True, controls={"weights": [1.0]})
    assert not list(tmp_path.iterdir())
