"""Does the weighting reach the output? Next-token logits through the trainer's own conditioning path (the prompt
the policy is shown and the forward context of its rows), for every CLP variant and for a Rewarded Soup.

At step 0 the parameter variants (full, attn, logit) have identical adapter copies whose LoRA B is zero, so every
w gives the reference policy: the logits must not change with w. The prompt variant writes w into the system
message, so the logits change with w from the start. A soup mixes adapters trained apart, so they change with w.
After one policy-gradient update on samples drawn at different weightings the parameter variants must respond to
w too: otherwise the weights never reach the copies' gradients."""

from __future__ import annotations

import pytest
import torch

from steerable.backbone.adapters import load_named_adapters, save_model, wrap_lora
from steerable.backbone.loading import load_base_model, load_tokenizer
from steerable.backbone.mixing import AdapterMixer
from steerable.generation import GenerationSettings, make_sampler
from steerable.generation.hf import encode_prompt
from steerable.methods.clp.conditioning import ParameterConditioning
from tests.test_backbone import perturb_lora, tiny_config
from tests.test_reward_direction import END, PROMPTS, Corners, clp_module

WEIGHTINGS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7]])


def next_token_logits(model, tokenizer, conditioning, weights: torch.Tensor) -> torch.Tensor:
    """[W, V] logits after each weighting's rendering of one prompt, in one batch through `forward(w)`."""
    rows = [encode_prompt(tokenizer, conditioning.prompt(PROMPTS[0], w)) for w in weights]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    with torch.no_grad(), conditioning.forward(weights):
        return model(input_ids=ids, attention_mask=mask).logits[:, -1].float()


def spread(logits: torch.Tensor) -> float:
    """Largest difference between any weighting's logits and the first one's."""
    return float((logits - logits[0]).abs().max())


@pytest.mark.parametrize("variant", ["full", "attn", "logit"])
def test_parameter_variants_ignore_w_at_step_0_and_follow_it_after_one_update(variant) -> None:
    module, conditioning = clp_module(variant, Corners())
    model, tokenizer = module.model.eval(), module.tokenizer
    assert spread(next_token_logits(model, tokenizer, conditioning, WEIGHTINGS)) == 0.0
    with model.disable_adapter():
        reference = next_token_logits(model, tokenizer, conditioning, WEIGHTINGS[:1])
    torch.testing.assert_close(next_token_logits(model, tokenizer, conditioning, WEIGHTINGS[:1]), reference)
    # one update on prompts drawn at (1, 0) and (0, 1): each copy gets its own prompts' gradient
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    loss, _ = module.rl_loss(PROMPTS)
    loss.backward()
    optimizer.step()
    assert spread(next_token_logits(model.eval(), tokenizer, conditioning, WEIGHTINGS)) > 1e-3


@pytest.mark.parametrize("variant", ["full", "logit"])
def test_training_samples_with_stacked_mixing_as_with_the_per_adapter_hooks(variant) -> None:
    """clp_train_stage samples through the mixer's stacked form: after the copies moved apart, greedy replies
    at mixed weightings are the per-adapter path's, token for token."""
    module, conditioning = clp_module(variant, Corners())
    perturb_lora(module.model, seed=3)
    hooked = ParameterConditioning(conditioning.mixer)
    assert conditioning._sample_mixed == conditioning.mixer.stacked  # the path under test is the stacked one
    weights = torch.tensor([[0.8, 0.2], [0.3, 0.7]])
    settings = GenerationSettings(max_new_tokens=12, do_sample=False, batch_size=4)
    sampler = make_sampler(module.model, module.tokenizer, END)
    replies = {
        name: sampler.generate(PROMPTS[:2], settings, row_context=c.rows(weights))
        for name, c in {"stacked": conditioning, "hooked": hooked}.items()
    }
    assert [c.token_ids for c in replies["stacked"]] == [c.token_ids for c in replies["hooked"]]
    assert len({tuple(c.token_ids) for c in replies["stacked"]}) > 1


def test_prompt_variant_follows_w_from_step_0() -> None:
    module, conditioning = clp_module("prompt", Corners())
    model = module.model.eval()
    logits = next_token_logits(model, module.tokenizer, conditioning, WEIGHTINGS)
    assert spread(logits) > 1e-3
    # the same w twice gives the same logits: the difference is the weighting's text, nothing else
    same = next_token_logits(model, module.tokenizer, conditioning, WEIGHTINGS[[0, 0]])
    assert spread(same) < 1e-5


def test_rewarded_soup_follows_w_and_its_corners_are_its_ingredients(tmp_path) -> None:
    cfg = tiny_config()
    tokenizer = load_tokenizer(cfg)
    folders = {}
    for index in range(
        2
    ):  # two independently trained single-reward adapters, as soups_train_stage loads them
        single = wrap_lora(load_base_model(cfg, tokenizer), cfg.lora, adapter_name=f"objective_{index}")
        perturb_lora(single, seed=index)
        save_model(single, tokenizer, tmp_path / str(index))
        folders[f"objective_{index}"] = tmp_path / str(index) / f"objective_{index}"
    soup = load_named_adapters(load_base_model(cfg, tokenizer), folders).eval()
    conditioning = ParameterConditioning(AdapterMixer(soup, list(folders)))
    logits = next_token_logits(soup, tokenizer, conditioning, WEIGHTINGS)
    assert spread(logits) > 1e-3
    for index in range(2):  # w = e_i is ingredient i alone
        alone = load_named_adapters(load_base_model(cfg, tokenizer), {"x": folders[f"objective_{index}"]})
        rows = next_token_logits(alone.eval(), tokenizer, _Plain(), WEIGHTINGS[index : index + 1])
        torch.testing.assert_close(logits[index : index + 1], rows, rtol=1e-4, atol=1e-4)


class _Plain:
    """No conditioning: the prompt as given, no forward context."""

    def prompt(self, messages: list[dict], weights: torch.Tensor) -> list[dict]:
        return messages

    def forward(self, row_weights: torch.Tensor):
        from contextlib import nullcontext

        return nullcontext()
