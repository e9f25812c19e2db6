"""method=modpo: the loss against a re-derivation of the paper's formula (any number of objectives, DPO as the
one-objective case), margins that steer what is learned, pairs ranked by the target objective, objective and
weight rules, a tiny run with three objectives, and the train CLI (debug=fast, and a multirun over w)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from steerable.backbone import load_backbone
from steerable.cli.common import one_line, validate
from steerable.data.records import prompt_of
from steerable.data.tokenize import end_of_turn_id
from steerable.methods.dpo.loss import PairLogprobs, dpo_loss
from steerable.methods.dpo.module import pair_logprobs
from steerable.methods.modpo.config import MODPOConfig, objective_weights
from steerable.methods.modpo.loss import modpo_loss
from steerable.methods.modpo.module import MarginCollator, MODPOModule, Weighting
from steerable.methods.modpo.pairs import ScoredPair, candidate_replies, ranked_pairs, tokenize_scored
from steerable.methods.registry import load_policy
from steerable.rewards.base import RewardStack
from steerable.rewards.programmatic import LengthScorer, SentimentScorer
from steerable.training.lm_module import OptimSettings
from tests.conftest import TINY_RUN, compose_config, run_cli, train_in
from tests.test_backbone import tiny_config
from tests.test_cli import ENV, TINY

# ------------------------------------------------------------------------------------------------- loss


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def paper_loss(pc, pr, rc, rr, mc, mr, w: list[float], beta: float) -> float:
    """-log sigma( beta/w_k * (log-ratio of chosen - of rejected) - 1/w_k * w_-k . (r_-k(chosen) - r_-k(rejected)) )
    for one pair, w[0] the target's weight, w[1:] the margin objectives'."""
    ratio = (pc - rc) - (pr - rr)
    margin = sum(wi * (c - r) for wi, c, r in zip(w[1:], mc, mr, strict=True))
    return -_log_sigmoid(beta / w[0] * ratio - margin / w[0])


@pytest.mark.parametrize(("w", "beta"), [([0.5, 0.5], 0.1), ([0.2, 0.3, 0.5], 0.5), ([0.9, 0.05, 0.05], 1.0)])
def test_loss_equals_the_papers_formula_for_any_number_of_objectives(w: list[float], beta: float) -> None:
    gen = torch.Generator().manual_seed(len(w))
    pc, pr, rc, rr = (-torch.rand(8, generator=gen, dtype=torch.float64) * 30 for _ in range(4))
    mc, mr = (torch.randn(8, len(w) - 1, generator=gen, dtype=torch.float64) for _ in range(2))
    terms = modpo_loss(
        PairLogprobs(pc, pr, rc, rr), mc, mr, w[0], torch.tensor(w[1:], dtype=torch.float64), beta
    )
    for i in range(8):
        hand = paper_loss(*(float(t[i]) for t in (pc, pr, rc, rr)), mc[i].tolist(), mr[i].tolist(), w, beta)
        assert float(terms.losses[i]) == pytest.approx(hand, rel=1e-9)
        implicit = (beta * (float(pc[i]) - float(rc[i])) - float(mc[i] @ torch.tensor(w[1:]).double())) / w[0]
        assert float(terms.chosen_rewards[i]) == pytest.approx(implicit)


def test_with_the_whole_weight_on_the_target_and_no_margin_it_is_dpo() -> None:
    pc, pr, rc, rr = (-torch.rand(6, generator=torch.Generator().manual_seed(i)) * 20 for i in range(4))
    zero = torch.zeros(6, 1)
    terms = modpo_loss(PairLogprobs(pc, pr, rc, rr), zero, zero, 1.0, torch.zeros(1), 0.1)
    torch.testing.assert_close(terms.losses, dpo_loss(pc, pr, rc, rr, 0.1).losses)


def test_a_margin_in_favour_of_the_chosen_reply_makes_the_policy_prefer_it_more() -> None:
    """The implicit reward must carry the other objectives too: where they already favour the chosen reply, the
    policy learns a larger log-prob margin; where they favour the rejected one, a smaller one."""
    from tests.test_dpo import PAIRS

    learned = {}
    for margin in (-3.0, 0.0, 3.0):
        torch.manual_seed(0)
        model, tok = load_backbone(tiny_config())
        scored = [
            ScoredPair(p.prompt_messages, p.chosen, p.rejected, {"o": margin}, {"o": 0.0}) for p in PAIRS
        ]
        pairs, _ = tokenize_scored(tok, scored, ["o"], 512, "truncate", end_of_turn_id(tok))
        batch = MarginCollator(tok.pad_token_id)(pairs)
        module = MODPOModule(model, OptimSettings(lr=1e-2), Weighting("t", 0.5, ("o",), (0.5,)), beta=0.1)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(8):
            total, count, _ = module.loss_terms(batch)
            optimizer.zero_grad()
            (total / count).backward()
            optimizer.step()
        with torch.no_grad():
            policy, reference = pair_logprobs(model, batch, average=False)
        ratio = policy - reference  # log pi - log pi_ref per row: chosen rows, then rejected rows
        learned[margin] = float((ratio.chunk(2)[0] - ratio.chunk(2)[1]).mean())
    assert learned[3.0] > learned[0.0] > learned[-3.0], learned


# ------------------------------------------------------------------------------------------------ pairs


def test_pairs_are_the_best_and_worst_reply_by_the_target_with_every_score_kept() -> None:
    stack = RewardStack({"verbosity": LengthScorer(), "positivity": SentimentScorer()})
    contexts = [[{"role": "user", "content": "Tips?"}], [{"role": "user", "content": "More?"}]]
    candidates = [
        ["Short.", "A much longer and rather gloomy reply.", "Two words."],
        ["Same length.", "Also same."],
    ]
    (pair,) = ranked_pairs(contexts, candidates, stack, "verbosity")  # the second prompt's replies tie
    assert (pair.chosen, pair.rejected) == ("A much longer and rather gloomy reply.", "Short.")
    assert pair.chosen_scores["verbosity"] == 7 and pair.rejected_scores["verbosity"] == 1
    assert set(pair.chosen_scores) == {"verbosity", "positivity"}
    assert pair.margins(["positivity"]) == (
        [pair.chosen_scores["positivity"]],
        [pair.rejected_scores["positivity"]],
    )


def test_replies_the_data_gives_one_prompt_are_candidates_together() -> None:
    """The demo task answers each question several ways: those replies make pairs with no sampling."""
    from steerable.data.demo import demo_conversations

    records = demo_conversations(400)  # 320 training questions: 80 asked twice
    contexts, candidates = candidate_replies(records, sampler=None, settings=None)
    assert len(contexts) < len(records) and sum(map(len, candidates)) == len(records)
    for context, replies in zip(contexts, candidates, strict=True):
        expected = [r.turns[-1].content for r in records if prompt_of(r) == context]
        assert replies == expected
    stack = RewardStack({"verbosity": LengthScorer(), "positivity": SentimentScorer()})
    pairs = ranked_pairs(contexts, candidates, stack, "verbosity")
    assert pairs and all(p.chosen_scores["verbosity"] > p.rejected_scores["verbosity"] for p in pairs)


# ----------------------------------------------------------------------------------------------- config

MODPO = ["method=modpo", "reward=[verbosity,positivity]"]


def test_objectives_target_and_weights_resolve_by_name() -> None:
    cfg = validate(compose_config("train", [*TINY_RUN, *MODPO, "method.weights=[0.3,0.7]"]))
    assert objective_weights(cfg) == {"verbosity": 0.3, "positivity": 0.7}
    three = [
        *TINY_RUN,
        "method=modpo",
        "reward=[verbosity,positivity,readability]",
        "method.target=positivity",
    ]
    assert objective_weights(validate(compose_config("train", three))) == pytest.approx(
        {"verbosity": 1 / 3, "positivity": 1 / 3, "readability": 1 / 3}
    )
    pairs = ["method=modpo", "model=tiny", "data=hh-rlhf", "data.path=x.jsonl", "reward=[verbosity]"]
    hh = validate(compose_config("train", [*pairs, "method.weights=[0.6,0.4]"]))
    assert objective_weights(hh) == {"preference": 0.6, "verbosity": 0.4}  # the data's labels are the target


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["reward=[verbosity]"], "method=modpo needs at least two objectives"),
        ([*MODPO, "method.weights=[0.5,0.6]"], "must be non-negative and sum to 1"),
        (
            [*MODPO, "method.weights=[0.2,0.3,0.5]"],
            "needs one value per objective ['verbosity', 'positivity']",
        ),
        ([*MODPO, "method.weights=[0.0,1.0]"], "gives the target objective verbosity weight 0"),
        ([*MODPO, "method.target=humor"], "method.target=humor is not an objective"),
        ([*MODPO, "model.lora.enabled=false"], "needs model.lora.enabled=true"),
    ],
)
def test_bad_settings_fail_naming_the_key(overrides: list[str], message: str) -> None:
    base = [*TINY_RUN, "method=modpo"]
    with pytest.raises(Exception) as err:
        validate(compose_config("train", [*base, *overrides]))
    assert message in one_line(err.value), one_line(err.value)


def test_defaults_are_the_papers() -> None:
    cfg = MODPOConfig()
    assert (cfg.beta, cfg.weights, cfg.target) == (0.1, [], "")


# ------------------------------------------------------------------------------------------------- runs


def test_a_tiny_run_with_three_objectives_trains_and_loads_as_a_fixed_weights_policy(tmp_path) -> None:
    run_dir = tmp_path / "run"
    overrides = [
        *TINY_RUN,
        "method=modpo",
        "reward=[verbosity,positivity,readability]",
        "trainer.max_steps=2",
    ]
    overrides += [
        "method.weights=[0.2,0.3,0.5]",
        "method.target=positivity",
        "method.sampling.max_new_tokens=6",
    ]
    results = train_in(run_dir, *overrides, "method.batch_size=2", f"output_root={tmp_path}")
    assert results["pairs"]["target"] == "positivity" and results["pairs"]["train_pairs"] > 0
    train = results["train"]
    assert train["steps"] == 2 and train["val_loss_before"] is not None
    pair = json.loads((run_dir / "pairs_train.jsonl").read_text().splitlines()[0])
    assert pair["chosen_scores"]["positivity"] > pair["rejected_scores"]["positivity"]
    policy = load_policy(run_dir)
    assert policy.kind == "modpo" and policy.controls() == []
    assert policy.fixed_weights == {"verbosity": 0.2, "positivity": 0.3, "readability": 0.5}
    meta = json.loads((run_dir / "checkpoints" / "final" / "steerable.json").read_text())
    assert meta["target"] == "positivity" and meta["weights"] == policy.fixed_weights


def test_preference_pairs_of_the_data_are_the_target_and_rewards_the_margin(tmp_path) -> None:
    from tests.test_dpo import write_hh_pairs

    data = write_hh_pairs(tmp_path / "hh.jsonl")
    overrides = [
        "method=modpo",
        "model=tiny",
        "hardware=cpu",
        "logger=csv",
        "data=hh-rlhf",
        f"data.path={data}",
    ]
    overrides += [
        "reward=[verbosity]",
        "method.weights=[0.6,0.4]",
        "trainer.max_steps=2",
        "data.val_fraction=0.25",
    ]
    run_dir = tmp_path / "run"
    results = train_in(run_dir, *overrides, f"output_root={tmp_path}")
    assert {k: v for k, v in results["pairs"].items() if k != "cost"} == {
        "train_pairs": 9,
        "heldout_pairs": 3,
        "target": "preference",
        "from_data": True,
    }
    assert results["train"]["steps"] == 2 and results["train"]["weights"] == {
        "preference": 0.6,
        "verbosity": 0.4,
    }
    row = json.loads((run_dir / "pairs_train.jsonl").read_text().splitlines()[0])
    assert row["chosen_scores"]["verbosity"] == pytest.approx(math.log1p(len(row["chosen"].split())))


def test_the_train_cli_runs_modpo_with_debug_fast_and_generates(tmp_path) -> None:
    """In this process (tests/test_cli.py starts each CLI in its own)."""
    args = [
        *TINY,
        *MODPO,
        "debug=fast",
        "method.sampling.max_new_tokens=4",
        "logger=csv",
        f"output_root={tmp_path}",
    ]
    result = run_cli("train", *args, "method.weights=[0.3,0.7]", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = list((tmp_path / "modpo").iterdir())
    assert json.loads((run_dir / "stages" / "train.json").read_text())["steps"] == 2
    gen = run_cli("generate", f"run={run_dir}", "prompt=Any tips?", "sampling.max_new_tokens=3", cwd=tmp_path)
    assert gen.returncode == 0, gen.stderr[-2000:]


@pytest.mark.sweeps
def test_a_multirun_over_weights_gives_one_policy_per_weighting(tmp_path) -> None:
    args = [*TINY, *MODPO, "debug=fast", "method.sampling.max_new_tokens=4", "method.stages=[pairs,train]"]
    args += ["logger=csv", f"output_root={tmp_path}", "method.weights=[0.2,0.8],[0.8,0.2]"]
    result = subprocess.run(
        [sys.executable, "-m", "steerable.cli.train", "-m", *args],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [
        p for p in Path(tmp_path / "modpo").rglob("checkpoints/final") if p.parent.parent.name != "online"
    ]
    weights = sorted(tuple(load_policy(p.parent.parent).fixed_weights.values()) for p in runs)
    assert weights == [(0.2, 0.8), (0.8, 0.2)]
