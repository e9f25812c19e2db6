"""method=dpo: the loss against hand and published formulas, the adapter-off reference, reply-only label
masks, pair data, config errors, a tiny run that learns the preference, and the run folder end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from steerable.backbone import load_backbone
from steerable.cli.common import one_line, validate
from steerable.config.schema import ConfigError, DataConfig
from steerable.data.formats.helpsteer2 import load_helpsteer2
from steerable.data.formats.rows import Row
from steerable.data.records import DataFormatError, PreferencePair, Turn
from steerable.data.tokenize import IGNORE_INDEX, end_of_turn_id
from steerable.methods.dpo.config import DPOConfig
from steerable.methods.dpo.loss import dpo_loss
from steerable.methods.dpo.module import DPOModule, Objective, pair_logprobs, preference_stats
from steerable.methods.dpo.pairs import (
    PairCollator,
    helpsteer_pairs,
    jsonl_pairs,
    tokenize_pair,
    tokenize_pairs,
)
from steerable.training.lm_module import OptimSettings
from tests.conftest import compose_config
from tests.test_backbone import perturb_lora, tiny_config

# ------------------------------------------------------------------------------------------------- loss


def _random_logps(n: int = 16, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [-torch.rand(n, generator=gen, dtype=torch.float64) * 40 for _ in range(4)]


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def trl_published(pc, pr, rc, rr, beta: float, loss_type: str, label_smoothing: float) -> torch.Tensor:
    """TRL's DPOTrainer.dpo_loss formulas as documented, written out here: logits = policy log-ratio of
    chosen over rejected minus the reference's; sigmoid (with cDPO smoothing) and ipo."""
    pi_logratios = pc - pr
    ref_logratios = rc - rr
    logits = pi_logratios - ref_logratios
    if loss_type == "sigmoid":
        return (
            -torch.nn.functional.logsigmoid(beta * logits) * (1 - label_smoothing)
            - torch.nn.functional.logsigmoid(-beta * logits) * label_smoothing
        )
    return (logits - 1 / (2 * beta)) ** 2


@pytest.mark.parametrize(
    ("loss_type", "beta", "smoothing"), [("sigmoid", 0.1, 0.0), ("sigmoid", 0.5, 0.2), ("ipo", 0.1, 0.0)]
)
def test_loss_equals_hand_computation_and_trl_formula(loss_type: str, beta: float, smoothing: float) -> None:
    pc, pr, rc, rr = _random_logps()
    terms = dpo_loss(pc, pr, rc, rr, beta, loss_type, smoothing)
    for i in range(len(pc)):
        h = (float(pc[i]) - float(rc[i])) - (float(pr[i]) - float(rr[i]))
        if loss_type == "sigmoid":
            hand = -(1 - smoothing) * _log_sigmoid(beta * h) - smoothing * _log_sigmoid(-beta * h)
        else:
            hand = (h - 1 / (2 * beta)) ** 2
        assert float(terms.losses[i]) == pytest.approx(hand, rel=1e-9, abs=1e-12)
        assert float(terms.chosen_rewards[i]) == pytest.approx(beta * (float(pc[i]) - float(rc[i])))
        assert float(terms.rejected_rewards[i]) == pytest.approx(beta * (float(pr[i]) - float(rr[i])))
    torch.testing.assert_close(terms.losses, trl_published(pc, pr, rc, rr, beta, loss_type, smoothing))
    metrics = terms.metrics()
    margins = terms.chosen_rewards - terms.rejected_rewards
    assert float(metrics["rewards/accuracy"]) == pytest.approx(float((margins > 0).double().mean()))
    assert float(metrics["rewards/margins"]) == pytest.approx(float(margins.mean()))


def test_loss_at_the_reference_is_log_two_and_gradient_favours_chosen() -> None:
    policy = torch.zeros(2, requires_grad=True)  # chosen, rejected log-probs of one pair
    terms = dpo_loss(policy[:1], policy[1:], torch.zeros(1), torch.zeros(1), beta=0.1)
    assert float(terms.losses) == pytest.approx(math.log(2))
    terms.losses.sum().backward()
    assert policy.grad[0] < 0 < policy.grad[1]  # descent raises chosen, lowers rejected


# ------------------------------------------------------------------------------------------- data + masks


def _pair(context: str, chosen: str, rejected: str) -> PreferencePair:
    return PreferencePair(context=[Turn("user", context)], chosen=chosen, rejected=rejected)


PAIRS = [
    _pair("Say something kind.", "You are wonderful and brave.", "No."),
    _pair("How do I cook rice?", "Rinse it, then simmer it covered.", "Whatever."),
    _pair("Greet me.", "Hello, lovely to see you!", "Go away."),
    _pair("Any tip for running?", "Start slowly and rest well.", "Don't."),
]


@pytest.fixture(scope="module")
def tiny():
    return load_backbone(tiny_config())


def test_label_masks_cover_exactly_the_replies(tiny) -> None:
    _, tok = tiny
    eot = end_of_turn_id(tok)
    pair = tokenize_pair(tok, PAIRS[1], eot, 10_000)
    for side, reply in ((pair.chosen, PAIRS[1].chosen), (pair.rejected, PAIRS[1].rejected)):
        targets = [t for t, label in zip(side.input_ids, side.labels, strict=True) if label != IGNORE_INDEX]
        assert targets == side.input_ids[len(side.input_ids) - len(targets) - 1 : -1]  # one contiguous span
        assert tok.decode(targets) == reply + tok.eos_token  # the reply and its end-of-turn, nothing else
        assert all(label == IGNORE_INDEX for label in side.labels[: len(side.labels) - len(targets) - 1])
    prompt = len(pair.chosen.input_ids) - pair.chosen.num_target_tokens - 1
    assert pair.chosen.input_ids[:prompt] == pair.rejected.input_ids[:prompt]  # the same context tokens
    batch = PairCollator(tok.pad_token_id)(tokenize_pairs(tok, PAIRS[:2], 512, "truncate", eot)[0])
    assert batch["input_ids"].shape[0] == 4  # chosen rows first, then their rejected rows
    assert tok.decode(batch["input_ids"][2][batch["labels"][2] != IGNORE_INDEX]).startswith("No.")


def test_pairs_without_reply_tokens_or_without_a_difference_are_dropped(tiny) -> None:
    _, tok = tiny
    no_reply = _pair("word " * 200, "yes", "no")  # the context alone fills max_length
    same_start = _pair("Hi", "Sure thing " * 20 + "yes", "Sure thing " * 20 + "no")  # cut before they differ
    equal = _pair("Hi", "same", "same")
    pairs = [no_reply, same_start, equal, PAIRS[0]]
    kept, stats = tokenize_pairs(tok, pairs, 64, "truncate", end_of_turn_id(tok))
    assert (len(kept), stats.kept, stats.dropped, stats.identical) == (1, 1, 1, 2)
    assert kept[0].chosen.input_ids != kept[0].rejected.input_ids
    kept, stats = tokenize_pairs(tok, pairs, 2000, "truncate", end_of_turn_id(tok))
    assert (stats.kept, stats.dropped, stats.identical, stats.truncated) == (3, 0, 1, 0)


def test_jsonl_pair_rows_in_three_layouts_and_errors_name_the_field() -> None:
    data = DataConfig(name="jsonl", path="pairs.jsonl")
    rows = [
        Row(1, {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Meh."}),
        Row(2, {"messages": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
                             {"role": "user", "content": "Q2"}], "chosen": "good", "rejected": "bad"}),
        Row(3, {"prompt": [{"role": "user", "content": "Hey"}], "id": "x",
                "chosen": [{"role": "assistant", "content": "Hi there"}],
                "rejected": [{"role": "assistant", "content": "What"}]}),
    ]  # fmt: skip
    pairs = jsonl_pairs(rows, "pairs.jsonl", data)
    assert [p.chosen for p in pairs] == ["Hello!", "good", "Hi there"]
    assert [p.rejected for p in pairs] == ["Meh.", "bad", "What"]
    assert [len(p.context) for p in pairs] == [1, 3, 1] and pairs[2].id == "x"
    assert pairs[1].prompt_messages[-1] == {"role": "user", "content": "Q2"}
    bad = {
        "rejected": {"prompt": "Hi", "chosen": "a", "rejected": ""},
        "chosen": {"prompt": "Hi", "rejected": "b"},
        "prompt": {"prompt": "   ", "chosen": "a", "rejected": "b"},
        "messages": {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                     "chosen": "a", "rejected": "b"},
    }  # fmt: skip
    for field_name, row in bad.items():
        with pytest.raises(DataFormatError, match=rf"pairs.jsonl:7: field '{field_name}'"):
            jsonl_pairs([Row(7, row)], "pairs.jsonl", data)


def test_helpsteer_replies_to_one_prompt_pair_by_helpfulness_and_ties_are_skipped() -> None:
    rows = [
        {"prompt": "P1", "response": "weak", "helpfulness": 1},
        {"prompt": "P1", "response": "strong", "helpfulness": 3},
        {"prompt": "P2", "response": "same a", "helpfulness": 2},
        {"prompt": "P2", "response": "same b", "helpfulness": 2},
        {"prompt": "P3", "response": "alone", "helpfulness": 4},
    ]
    pairs = helpsteer_pairs(load_helpsteer2(rows, "hs2"))
    assert [(p.context[-1].content, p.chosen, p.rejected) for p in pairs] == [("P1", "strong", "weak")]


@pytest.mark.shared_data
def test_the_helpsteer2_fixture_pairs_replies_without_splitting_a_prompt() -> None:
    from steerable.methods.dpo.pairs import split_pairs
    from tests.conftest import shared_file

    path = shared_file("helpsteer2-fixture/test-rm.jsonl")
    data = DataConfig(name="helpsteer2", format="helpsteer2", path=str(path), val_fraction=0.2)
    train, val = split_pairs(data)
    assert train and val
    assert not {p.prompt_messages[-1]["content"] for p in train} & {
        p.prompt_messages[-1]["content"] for p in val
    }
    assert all(p.chosen != p.rejected for p in train + val)


# -------------------------------------------------------------------------------------------- reference


def _full_logits_logprobs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Reply log-probs the plain way: every position's logits, log_softmax, sum where labelled."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    logp = torch.log_softmax(logits.float(), -1).gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return (logp * (targets != IGNORE_INDEX)).sum(-1)


def test_reference_is_the_adapter_off_model_and_the_policy_is_not() -> None:
    model, tok = load_backbone(tiny_config())
    batch = PairCollator(tok.pad_token_id)(
        tokenize_pairs(tok, PAIRS, 512, "truncate", end_of_turn_id(tok))[0]
    )
    policy0, reference0 = pair_logprobs(model, batch, average=False)
    torch.testing.assert_close(policy0, reference0)  # LoRA B starts at zero
    perturb_lora(model)
    policy, reference = pair_logprobs(model, batch, average=False)
    base, _ = load_backbone(tiny_config(enabled=False))  # a fresh copy of the base weights, no adapter
    with torch.no_grad():
        torch.testing.assert_close(reference, _full_logits_logprobs(base.eval(), batch))
        with model.disable_adapter():
            torch.testing.assert_close(reference, _full_logits_logprobs(model, batch))
        torch.testing.assert_close(policy, _full_logits_logprobs(model, batch))
    torch.testing.assert_close(reference, reference0)
    assert (policy - reference).abs().min() > 1e-3
    assert policy.requires_grad and not reference.requires_grad
    targets = (batch["labels"][:, 1:] != IGNORE_INDEX).sum(-1)
    averaged, _ = pair_logprobs(model, batch, average=True)
    torch.testing.assert_close(averaged, policy / targets)


def test_ipo_defaults_to_per_token_averaged_logprobs_and_matches_its_formula() -> None:
    """IPO (Azar et al. 2023; TRL's IPO) compares per-token mean log-probs: (h - 1/(2 beta))^2 with h built from
    each reply's mean token log-prob; sigmoid keeps the DPO paper's sum; an explicit choice wins."""
    assert DPOConfig(loss_type="ipo").average_logprobs is True
    assert DPOConfig(loss_type="sigmoid").average_logprobs is False
    assert DPOConfig(loss_type="ipo", average_logprobs=False).average_logprobs is False
    objective = Objective.of(DPOConfig(loss_type="ipo", beta=0.2))
    assert objective.average_logprobs
    model, tok = load_backbone(tiny_config())
    perturb_lora(model)
    batch = PairCollator(tok.pad_token_id)(
        tokenize_pairs(tok, PAIRS, 512, "truncate", end_of_turn_id(tok))[0]
    )
    module = DPOModule(model, OptimSettings(lr=1e-4), objective)
    loss_sum, pairs, _ = module.loss_terms(batch)
    with torch.no_grad():
        counts = (batch["labels"][:, 1:] != IGNORE_INDEX).sum(-1).double()
        policy = _full_logits_logprobs(model, batch).double() / counts
        with model.disable_adapter():
            reference = _full_logits_logprobs(model, batch).double() / counts
    pc, pr = policy.chunk(2)
    rc, rr = reference.chunk(2)
    hand = sum(((float(pc[i] - rc[i]) - float(pr[i] - rr[i])) - 1 / (2 * 0.2)) ** 2 for i in range(len(pc)))
    assert int(pairs) == len(PAIRS)
    assert float(loss_sum) == pytest.approx(hand, rel=1e-4)


# ------------------------------------------------------------------------------------------------ learning


def test_a_tiny_run_raises_the_margin_on_its_training_pairs() -> None:
    torch.manual_seed(0)
    model, tok = load_backbone(tiny_config())
    pairs, _ = tokenize_pairs(tok, PAIRS, 512, "truncate", end_of_turn_id(tok))
    collate = PairCollator(tok.pad_token_id)
    objective = Objective(beta=0.1)
    before = preference_stats(model, pairs, collate, objective)
    module = DPOModule(model, OptimSettings(lr=1e-2), objective)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = collate(pairs)
    losses = []
    for _ in range(30):
        total, count, _ = module.loss_terms(batch)
        optimizer.zero_grad()
        (total / count).backward()
        optimizer.step()
        losses.append(float(total / count))
    after = preference_stats(model, pairs, collate, objective)
    assert before["reward_margin"] == 0 and before["policy_logp_margin"] == before["reference_logp_margin"]
    assert after["policy_logp_margin"] > before["policy_logp_margin"] + 5, (before, after)
    assert after["reward_margin"] > 0.5 and after["reward_accuracy"] == 1.0
    assert after["policy_logp_accuracy"] >= before["policy_logp_accuracy"]
    assert after["reference_logp_margin"] == pytest.approx(before["reference_logp_margin"], abs=1e-4)
    assert losses[-1] < losses[0] - 0.3 and losses[0] == pytest.approx(math.log(2), abs=1e-5)


# -------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"beta": 0.0}, "method.beta must be greater than 0"),
        ({"beta": -1.0}, "method.beta"),
        ({"label_smoothing": 0.5}, r"method.label_smoothing must be in \[0, 0.5\), got 0.5"),
        ({"label_smoothing": -0.1}, "method.label_smoothing"),
        ({"loss_type": "ipo", "label_smoothing": 0.1}, "method.label_smoothing applies to method.loss_type="),
        ({"loss_type": "hinge"}, r"method.loss_type must be one of \['sigmoid', 'ipo'\]"),
        ({"lr": 0.0}, "method.lr must be positive"),
    ],
)
def test_bad_values_fail_naming_the_key(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DPOConfig(**values)


DPO_RUN = ["method=dpo", "model=tiny", "hardware=cpu", "logger=csv"]


def test_composition_rejects_a_wrong_loss_type_listing_the_choices() -> None:
    with pytest.raises(Exception) as err:
        validate(compose_config("train", [*DPO_RUN, "data=hh-rlhf", "data.path=x", "method.loss_type=dpo"]))
    line = one_line(err.value)
    assert "method.loss_type" in line and "sigmoid" in line and "ipo" in line, line


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data=demo"], "method=dpo needs preference pairs; data.format=demo"),
        (["data=oasst1", "data.path=x"], "data.format=oasst1"),
        (["data=hh-rlhf", "data.path=x", "model.lora.enabled=false"], "model.lora.enabled=true"),
        (["data=helpsteer2", "data.attributes=[verbosity]"], "data.attributes"),
    ],
)
def test_data_and_model_without_pairs_or_lora_are_refused(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):  # validate runs the spec's check
        validate(compose_config("train", [*DPO_RUN, *overrides]))


def test_the_registry_lists_dpo_with_its_stages() -> None:
    from steerable.methods.registry import spec_of

    spec = spec_of("dpo")
    assert spec.config is DPOConfig and spec.stage_names == ["train", "eval"] and spec.evaluation is None
    cfg = validate(compose_config("train", [*DPO_RUN, "data=hh-rlhf", "data.path=x"]))
    assert (
        isinstance(cfg.method, DPOConfig)
        and cfg.method.beta == 0.1
        and list(cfg.method.stages) == ["train", "eval"]
    )


# ------------------------------------------------------------------------------------------------ end to end


def write_hh_pairs(path: Path, n: int = 12) -> Path:
    rows = [
        {
            "chosen": f"\n\nHuman: Tip number {i} for a calm day?\n\nAssistant: Breathe slowly and take a walk.",
            "rejected": f"\n\nHuman: Tip number {i} for a calm day?\n\nAssistant: No idea, go away.",
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_train_and_report_write_the_run_folder(tmp_path) -> None:
    from steerable.cli.train import run

    data = write_hh_pairs(tmp_path / "hh.jsonl")
    overrides = [
        *DPO_RUN,
        "data=hh-rlhf",
        f"data.path={data}",
        "data.val_fraction=0.25",
        "trainer.max_steps=3",
    ]
    overrides += [f"output_root={tmp_path}", "report.num_samples=2", "report.sampling.max_new_tokens=8"]
    cfg = validate(compose_config("train", overrides))
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    results = run(cfg, run_dir)
    train = results["train"]
    assert train["steps"] == 3 and train["train_pairs"] == 9 and train["val_pairs"] == 3
    assert train["val_loss_before"] == pytest.approx(math.log(2), abs=1e-4)  # policy = reference at the start
    assert train["heldout_pairs"] == 3 and train["heldout_reward_accuracy"] is not None
    final = run_dir / "checkpoints" / "final"
    assert (final / "adapter_model.safetensors").is_file()
    meta = json.loads((final / "steerable.json").read_text())
    assert meta["kind"] == "dpo" and meta["adapter_only"] is True and meta["steps"] == 3
    report = (run_dir / "report.md").read_text()
    assert "held-out implicit reward accuracy" in report and "before training" in report
    assert json.loads((run_dir / "stages" / "train.json").read_text())["heldout_pairs"] == 3
    metrics = (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert "train/rewards/margins" in metrics and "val/rewards/accuracy" in metrics


def test_the_train_cli_dispatches_method_dpo(tmp_path) -> None:
    from tests.test_cli import cli

    data = write_hh_pairs(tmp_path / "hh.jsonl")
    args = [
        "method=dpo",
        "model=tiny",
        "data=hh-rlhf",
        f"data.path={data}",
        "trainer.max_steps=3",
        "logger=csv",
    ]
    args += [
        "hardware=cpu",
        "report.num_samples=1",
        "report.sampling.max_new_tokens=4",
        f"output_root={tmp_path}",
    ]
    result = cli("train", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = list((tmp_path / "dpo").iterdir())
    assert (run_dir / "checkpoints" / "final" / "adapter_model.safetensors").is_file()
    assert "## Sample generations" in (run_dir / "report.md").read_text()
    assert json.loads((run_dir / "stages" / "train.json").read_text())["steps"] == 3
