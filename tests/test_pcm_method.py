"""method=pcm end to end on the tiny model: experts per side, REBEL-trained controller, eval arms; preferences."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from steerable.cli.common import validate
from steerable.cli.generate import generate
from steerable.config.schema import ConfigError
from steerable.methods.pcm.preferences import (
    combinations,
    composite_probabilities,
    parse_dimensions,
    parse_preference,
)
from tests.conftest import TINY_RUN, compose_config, run_results, train_in

PCM = [
    *TINY_RUN,
    "method=pcm",
    "reward=[verbosity,positivity]",
    "trainer.max_steps=2",
    "method.expert_steps=2",
    "method.batch_size=2",
    "method.sampling.max_new_tokens=6",
    "method.eval.num_prompts=2",
    "method.eval.sampling.max_new_tokens=6",
    "method.eval.bootstrap=50",
]


def test_unquoted_preference_argument_is_quoted_for_hydra() -> None:
    from steerable.cli.generate import quoted_preference

    assert quoted_preference("preference=concise, friendly") == "preference='concise, friendly'"
    assert quoted_preference("preference='a, b'") == "preference='a, b'"
    assert quoted_preference("prompt=x, y") == "prompt=x, y"


def test_preferences_pick_one_side_per_dimension() -> None:
    dims = parse_dimensions(["verbosity:concise:detailed", "positivity:unfriendly:friendly"])
    assert combinations(dims) == [
        ("concise", "unfriendly"),
        ("concise", "friendly"),
        ("detailed", "unfriendly"),
        ("detailed", "friendly"),
    ]
    assert parse_preference("friendly, concise", dims) == ("concise", "friendly")
    with pytest.raises(ConfigError, match="exactly one of concise/detailed"):
        parse_preference("concise, detailed, friendly", dims)
    with pytest.raises(ConfigError, match="exactly one of unfriendly/friendly"):
        parse_preference("concise", dims)
    with pytest.raises(ConfigError, match=r"unknown side\(s\) \['witty'\]"):
        parse_preference("concise, friendly, witty", dims)
    with pytest.raises(ConfigError, match=r"method\.dimensions"):
        validate(compose_config("train", [*PCM, "method.dimensions=[verbosity:short]"]))


def test_tiny_pcm_run_then_generate_and_reuse_experts(tmp_path, trained_run) -> None:
    run_dir = trained_run(*PCM)  # shared with tests/test_serve.py; only read here
    results = run_results(run_dir)
    assert set(json.loads((run_dir / "experts" / "final" / "steerable.json").read_text())["sides"]) == {
        "concise",
        "detailed",
        "unfriendly",
        "friendly",
    }
    assert results["pcm"]["steps"] == 2 and (run_dir / "controller" / "controller.safetensors").is_file()
    # trainer.max_steps counts sampling rounds; each makes method.epochs (2) REBEL updates
    assert results["pcm"]["optimizer_updates"] == 4
    metrics = (run_dir / "metrics.csv").read_text().splitlines()
    rounds = [r for r in csv.DictReader(metrics) if r.get("train/reward")]
    assert len(rounds) == 2
    # diagnostics: the controller's weight on each side's expert and that side's reward term, per round
    for side in ("concise", "detailed", "unfriendly", "friendly"):
        logged = [float(r[f"diag/alpha_{side}"]) for r in rounds if r.get(f"diag/alpha_{side}")]
        weights = [w for w in logged if w == w]  # NaN: no row asked for this side in that round
        assert len(logged) == 2 and weights and all(0 < w < 1 for w in weights), side
    assert "diagnostics/alpha.png" in (run_dir / "diagnostics.md").read_text()
    arms = {row["pcm vs"] for row in json.loads((run_dir / "pcm" / "results.json").read_text())["win_rates"]}
    assert arms == {
        "uniform mixture",
        "logit mixing",
        "preference prompting",
        "parameter average (ΔW)",
        "parameter average (A, B separately)",
    }
    gen = validate(
        compose_config(
            "generate",
            [
                f"run={run_dir}",
                "prompt=Any tips?",
                "sampling.max_new_tokens=4",
                "preference='concise, friendly'",
            ],
        )
    )
    assert len(generate(gen)) == 1
    with pytest.raises(ConfigError, match=r"attributes.quality: run=.* whose only control is preference"):
        generate(
            validate(
                compose_config(
                    "generate", [f"run={run_dir}", "prompt=x", "+attributes.quality=4", "preference=concise"]
                )
            )
        )
    with pytest.raises(ConfigError, match="unknown side"):
        generate(
            validate(
                compose_config(
                    "generate", [f"run={run_dir}", "prompt=x", "preference='concise, unfriendly, odd'"]
                )
            )
        )
    # the controller stage alone, on another run's experts
    second = tmp_path / "second"
    reused = train_in(second, *PCM, "method.stages=[pcm]", f"method.experts={run_dir}")
    assert reused["experts"]["reused"] and not (second / "experts").exists()


def test_blended_pcm_is_the_paper_policy_at_the_sides_and_the_average_mixture_between(trained_run) -> None:
    from steerable.generation import GenerationSettings
    from steerable.methods.pcm.policy import load_preference_policy

    policy = load_preference_policy(trained_run(*PCM))
    blended = policy.alternatives()["blended preferences"]
    prompts = [[{"role": "user", "content": "Any tips for a trip?"}], [{"role": "user", "content": "Hello"}]]
    greedy = GenerationSettings(max_new_tokens=5, do_sample=False)
    sides = {"preference": "detailed, unfriendly"}
    assert [c.text for c in blended.generate(prompts, sides, greedy)] == [
        c.text for c in policy.generate(prompts, sides, greedy)
    ]
    # between the sides: each composite preference's controller weights, averaged by its probability
    generated = torch.zeros(2, 0, dtype=torch.long)
    halfway = blended.resolve({"preference.verbosity": 0.5, "preference.positivity": 0.25})
    mixed = blended.mixture_weights(prompts, halfway)([0, 1], generated)
    expected = sum(
        p
        * policy.mixture_weights(prompts, policy.resolve({"preference": ", ".join(pref)}))([0, 1], generated)
        for pref, p in composite_probabilities({"verbosity": 0.5, "positivity": 0.25}, policy.dims)
    )
    assert torch.allclose(mixed, expected) and torch.allclose(mixed.sum(-1), torch.ones(2))
    assert (mixed > 0).all()  # every side's expert takes part halfway, unlike any one preference
