"""SteerLM 2.0: the Beta read of the attribute model, the importance weights, the loss and its gradient against
a hand computation, and a tiny run of the stage (two iterations, groups kept whole, the policy moves)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from steerable.cli.train import run
from steerable.config.schema import ConfigError
from steerable.methods.steerlm.loss import label_logprob, steerlm2_loss, target_weights
from tests.test_steerlm import fake_apm, steerlm_cfg  # noqa: F401  (fake_apm is a fixture)


def test_beta_label_probabilities_cover_the_range_and_peak_at_the_prediction() -> None:
    predictions = np.array([[0.2], [2.0], [3.9]])
    table = np.stack([np.exp(label_logprob(predictions, np.array([n]), (0, 4))) for n in range(5)], axis=1)
    np.testing.assert_allclose(table.sum(axis=1), 1.0, atol=1e-6)
    assert list(table.argmax(axis=1)) == [0, 2, 4]
    # several attributes: independent, so log-probs add
    two = label_logprob(np.array([[2.0, 3.9]]), np.array([2, 4]), (0, 4))
    single = label_logprob(np.array([[2.0]]), np.array([2]), (0, 4)) + label_logprob(
        np.array([[3.9]]), np.array([4]), (0, 4)
    )
    np.testing.assert_allclose(two, single)
    # a sharper Beta puts more mass on the predicted bin
    assert label_logprob(np.array([[2.0]]), np.array([2]), (0, 4), 100.0) > label_logprob(
        np.array([[2.0]]), np.array([2]), (0, 4), 24.0
    )


def test_target_weights_are_the_normalised_importance_ratios() -> None:
    log_a = torch.tensor([[-1.0, -2.0, -0.5]])
    log_prior = torch.tensor([[-10.0, -12.0, -11.0]])
    log_q = torch.tensor([[-9.0, -13.0, -10.0]])
    ratio = torch.exp(log_a + log_prior - log_q)
    torch.testing.assert_close(target_weights(log_a, log_prior, log_q), ratio / ratio.sum())


def test_loss_and_gradient_match_the_hand_computation() -> None:
    log_q_theta = torch.tensor([[-3.0, -5.0, -4.0], [-2.0, -2.5, -6.0]], requires_grad=True)
    log_q_sampler = torch.tensor([[-3.5, -4.0, -4.5], [-2.0, -3.0, -5.0]])
    weights = torch.tensor([[0.6, 0.1, 0.3], [0.2, 0.2, 0.6]])
    tokens = torch.tensor([[4, 6, 5], [2, 3, 7]])
    loss, distance = steerlm2_loss(log_q_theta, tokens, log_q_sampler, weights)
    loss.backward()

    baseline = torch.softmax(log_q_theta.detach() - log_q_sampler, dim=1)
    scale = torch.tensor([[5.0], [4.0]])  # mean reply length per group
    expected_loss = (((weights - baseline) * -log_q_theta.detach()) / scale).sum(1).mean()
    expected_grad = -(weights - baseline) / scale / 2  # ∇ = −Σ (w' − b') ∇log Q_θ, averaged over 2 groups
    expected_distance = (weights * (weights / baseline).log()).sum(1).mean()
    torch.testing.assert_close(loss.detach(), expected_loss)
    torch.testing.assert_close(log_q_theta.grad, expected_grad)
    torch.testing.assert_close(distance, expected_distance)

    # the policy already matching the target: no gradient, zero distance
    matched = (log_q_sampler + weights.log()).requires_grad_()
    loss, distance = steerlm2_loss(matched, tokens, log_q_sampler, weights)
    loss.backward()
    torch.testing.assert_close(matched.grad, torch.zeros_like(matched), atol=1e-7, rtol=0)
    assert abs(float(distance)) < 1e-6


def adapter(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


def test_tiny_steerlm2_stage_keeps_groups_whole_and_moves_the_policy(tmp_path, fake_apm) -> None:  # noqa: F811
    run_dir = tmp_path / "run"
    cfg = steerlm_cfg(
        tmp_path,
        f"method.apm={fake_apm}",
        "method.stages=[acsft,baseline,steerlm2]",
        "method.steerlm2.num_prompts=3",
        "method.steerlm2.samples_per_prompt=3",
        "method.steerlm2.sampling.max_new_tokens=4",
        "method.steerlm2.condition=[verbosity:4]",
        "method.steerlm2.epochs=1",
        "method.steerlm2.lr=1e-2",
    )
    results = run(cfg, run_dir)
    summary = results["steerlm2"]
    assert [r["groups"] for r in summary["iterations"]] == [3, 3]
    assert [r["steps"] for r in summary["iterations"]] == [2, 2]  # ceil(3 groups / 2 per step) x 1 epoch
    for k in (1, 2):
        records = [
            json.loads(x) for x in (run_dir / f"steerlm2/iter{k}/samples.jsonl").read_text().splitlines()
        ]
        assert len(records) == 3 and all(len(r["responses"]) == 3 for r in records)
        assert all(r["label"] == {"verbosity": 4, "positivity": 0} for r in records)
        for r in records:
            numeric = ("log(P(a|x,y))", "log(P(y|x))", "log(Q(y|a,x))", "weight")
            logs = {key: torch.tensor([[x[key] for x in r["responses"]]]) for key in numeric}
            expected = target_weights(logs["log(P(a|x,y))"], logs["log(P(y|x))"], logs["log(Q(y|a,x))"])
            torch.testing.assert_close(logs["weight"], expected)
    before = adapter(run_dir / "acsft/checkpoints/final")
    after = adapter(run_dir / "checkpoints/final")
    assert any(not torch.equal(before[name], after[name]) for name in before)
    published = json.loads((run_dir / "checkpoints/final/steerable.json").read_text())
    assert published["stage"] == "steerlm2" and published["attributes"]["names"] == [
        "verbosity",
        "positivity",
    ]


def test_one_sample_per_group_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"method\.steerlm2\.samples_per_prompt must be at least 2"):
        steerlm_cfg(tmp_path, "method.steerlm2.samples_per_prompt=1")
