"""method=ric: the prompt format, the z-score, the preference-to-reward mapping, the online targets and the
front-extension filter against re-derivations on fixed inputs; config errors; a tiny run through the train and
generate CLIs (debug=fast) and in process (offline + two online rounds), and the policy's weights control."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch

from steerable.cli.common import one_line, validate
from steerable.config.schema import ConfigError
from steerable.generation import GenerationSettings
from steerable.methods.registry import describe, load_policy
from steerable.methods.ric.config import RiCConfig
from steerable.methods.ric.scores import (
    ScoreScale,
    extends_front,
    format_score,
    front_targets,
    rewards_for_preference,
    with_scores,
)
from tests.conftest import TINY_RUN, compose_config, run_cli, run_results
from tests.test_cli import TINY

# ------------------------------------------------------------------------------------------ format + scale


def test_scores_are_written_after_the_last_user_turn_in_rics_tags() -> None:
    chat = [
        {"role": "user", "content": "First question?"},
        {"role": "assistant", "content": "An answer."},
        {"role": "user", "content": "Any tips for sleeping well?  "},
    ]
    shown = with_scores(chat, [0.61, -1.24], 1)
    assert shown[:2] == chat[:2] and chat[2]["content"].endswith(
        "  "
    )  # earlier turns and the input untouched
    assert shown[2] == {
        "role": "user",
        "content": "Any tips for sleeping well? <rm1_score> 0.6 <rm2_score> -1.2",
    }
    three = with_scores(chat[2:], [2.0, -0.04, 1.25], 1)[0]["content"]
    assert three.endswith("<rm1_score> 2.0 <rm2_score> 0.0 <rm3_score> 1.2")  # no "-0.0"; half to even
    assert format_score(-0.26, 2) == "-0.26" and format_score(3, 0) == "3"


def test_zscore_uses_the_training_data_statistics_and_rounds_like_the_prompt() -> None:
    raw = torch.tensor([[1.0, 10.0, 5.0], [2.0, 20.0, 5.0], [3.0, 30.0, 5.0], [6.0, 40.0, 5.0]])
    scale = ScoreScale.fit(["a", "b", "c"], raw, zscore=True, decimals=1)
    for k in range(3):
        column = [float(v) for v in raw[:, k]]
        mean = sum(column) / len(column)
        std = math.sqrt(sum((v - mean) ** 2 for v in column) / len(column)) or 1.0  # population std
        assert scale.mean[k] == pytest.approx(mean) and scale.std[k] == pytest.approx(std)
        hand = [round((v - mean) / std, 1) for v in column]
        assert scale.normalise(raw)[:, k].tolist() == pytest.approx(hand)
        assert (scale.low[k], scale.high[k]) == pytest.approx((min(hand), max(hand)))
    assert scale.normalise(raw)[:, 2].tolist() == [0.0] * 4  # a constant objective is only centred
    raw_kept = ScoreScale.fit(["a", "b", "c"], raw, zscore=False)
    assert raw_kept.normalise(raw).tolist() == raw.tolist()
    assert ScoreScale.from_dict(json.loads(json.dumps(scale.to_dict()))) == scale


GOOD_SCALE = {
    "names": ["a", "b"],
    "mean": [0.0, 1.0],
    "std": [1.0, 2.0],
    "low": [-1.0, -2.0],
    "high": [1.0, 2.0],
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tags": ["<a_score>"]}, "tags has 1 entries for 2 objectives"),
        ({"low": [-1.0]}, "low has 1 entries for 2 objectives"),
        ({"mean": [0.0, "x"]}, "mean must be a list of float"),
        ({"std": [1.0, float("nan")]}, "std must be a list of float"),
        ({"std": [1.0, 0.0]}, "std must be positive"),
        ({"decimals": 1.5}, "decimals must be an integer"),
        ({"extra": 1}, "unknown fields ['extra']"),
        ({"names": None}, "names must be a list of str"),
    ],
)
def test_a_saved_score_scale_is_checked_field_by_field(change: dict, message: str) -> None:
    assert ScoreScale.from_dict(GOOD_SCALE).names == ("a", "b")
    with pytest.raises(ValueError, match=re.escape(message)):
        ScoreScale.from_dict({**GOOD_SCALE, **change})
    with pytest.raises(ValueError, match="lacks \\['high'\\]"):
        ScoreScale.from_dict({k: v for k, v in GOOD_SCALE.items() if k != "high"})


# ---------------------------------------------------------------------------------------------- mapping


def paper_mapping(w: list[float], low: list[float], high: list[float]) -> list[float]:
    """The paper's mapping written out: the largest weight asks for its maximum, every other objective for
    min(N w_i, 1) of its range above its minimum."""
    n, top = len(w), w.index(max(w))
    out = []
    for i in range(n):
        fraction = 1.0 if i == top else min(n * w[i], 1.0)
        out.append(round(low[i] + fraction * (high[i] - low[i]), 1))
    return out


@pytest.mark.parametrize(
    ("w", "low", "high"),
    [
        ([0.3, 0.7], [-2.0, -1.0], [2.0, 3.0]),
        ([0.5, 0.5], [-2.0, -1.0], [2.0, 3.0]),
        ([1.0, 0.0], [-1.5, -2.5], [1.5, 2.5]),
        ([0.2, 0.5, 0.3], [0.0, -1.0, -3.0], [1.0, 1.0, 3.0]),
        ([0.1, 0.1, 0.8], [-2.0, -2.0, -2.0], [2.0, 2.0, 2.0]),
    ],
)
def test_preference_to_reward_mapping_is_the_papers(w: list, low: list, high: list) -> None:
    assert rewards_for_preference(w, low, high) == pytest.approx(paper_mapping(w, low, high))
    assert rewards_for_preference([0.3, 0.7], [-2.0, -1.0], [2.0, 3.0]) == [0.4, 3.0]  # 0.6 * 4 - 2 = 0.4
    norm = math.sqrt(sum(x * x for x in w))
    l2 = [round(lo + x / norm * (hi - lo), 1) for x, lo, hi in zip(w, low, high, strict=True)]
    assert rewards_for_preference(w, low, high, "l2") == pytest.approx(l2)
    linear = [round(lo + x * (hi - lo), 1) for x, lo, hi in zip(w, low, high, strict=True)]
    assert rewards_for_preference(w, low, high, "linear") == pytest.approx(linear)
    with pytest.raises(ValueError, match="unknown RiC mapping"):
        rewards_for_preference(w, low, high, "softmax")


# ------------------------------------------------------------------------------------ targets + front


def test_online_targets_put_all_but_one_objective_at_its_maximum() -> None:
    low, high = [-2.0, -1.0, -3.0], [2.0, 3.0, 1.0]
    targets = front_targets(300, low, high, torch.Generator().manual_seed(0))
    at_max = targets == torch.tensor(high)
    assert (at_max.sum(1) >= 2).all()  # K-1 at the maximum (the kept draw may round onto it too)
    assert ((targets >= torch.tensor(low)) & (targets <= torch.tensor(high))).all()
    free = (~at_max).float().argmax(1)[~at_max.all(1)]
    assert set(free.tolist()) == {0, 1, 2}  # each objective gets to be the free one
    # re-derived with the same random stream: the lowest fraction of its range is kept, others at the maximum
    generator = torch.Generator().manual_seed(5)
    fraction = torch.rand(4, 3, generator=generator, dtype=torch.float64)
    again = front_targets(4, low, high, torch.Generator().manual_seed(5))
    for row in range(4):
        j = int(fraction[row].argmin())
        hand = list(high)
        hand[j] = round(low[j] + float(fraction[row, j]) * (high[j] - low[j]), 1)
        assert again[row].tolist() == pytest.approx(hand)


def test_a_sample_extends_the_front_when_one_score_reaches_its_quantile() -> None:
    a = torch.arange(11, dtype=torch.float64)  # 0..10: the 0.7-quantile (linear interpolation) is 7.0
    scores = torch.stack([a, a.flip(0)], dim=1)  # the second objective runs the other way
    keep = extends_front(scores, 0.7)
    assert keep.tolist() == [True] * 4 + [False] * 3 + [True] * 4  # rows 0-3 by b >= 7, rows 7-10 by a >= 7
    assert extends_front(scores, 0.0).all() and extends_front(torch.zeros(0, 2)).numel() == 0
    ties = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    assert extends_front(ties, 0.7).tolist() == [True, True, True]  # every row reaches the tied 0.0 column


# ---------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["reward=[verbosity]"], "method=ric needs at least two objectives"),
        (
            ["reward=[verbosity,positivity]", "method.objectives=[verbosity,humor]"],
            "method.objectives ['humor']",
        ),
        (["reward=[verbosity,positivity]", "method.quantile=1.5"], "method.quantile must be in [0, 1]"),
        (["reward=[verbosity,positivity]", "method.mapping=softmax"], "method.mapping"),
    ],
)
def test_bad_settings_fail_naming_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(Exception) as err:
        validate(compose_config("train", [*TINY_RUN, "method=ric", *overrides]))
    assert message in one_line(err.value), one_line(err.value)


def test_defaults_follow_the_paper_and_reference_code() -> None:
    cfg = RiCConfig()
    assert (cfg.normalize, cfg.mapping, cfg.decimals, cfg.quantile) == ("zscore", "linf", 1, 0.7)
    assert (cfg.sampling.temperature, cfg.sampling.top_p, cfg.online_lr, cfg.lr) == (0.7, 0.9, 1e-5, 1.414e-4)
    with pytest.raises(ConfigError, match=r"method\.online_samples"):
        RiCConfig(online_samples=0)


def test_help_lists_ric_and_modpo_with_their_stages() -> None:
    text = describe()
    for line in ("  ric ", "      offline:", "      online (needs offline):", "  modpo ", "      pairs:"):
        assert line in text, line
    assert "      train (needs pairs):" in text


# ------------------------------------------------------------------------------------------------- runs

RIC = [
    "method=ric",
    "reward=[verbosity,positivity]",
    "method.batch_size=2",
    "method.sampling.max_new_tokens=6",
    "method.online_samples=6",
    "method.online_steps=1",
]


@pytest.fixture(scope="module")
def ric_run(trained_run) -> tuple[Path, dict]:
    """A finished tiny RiC run (offline + two online rounds) and its results; tests only read it."""
    run_dir = trained_run(*TINY_RUN, *RIC, "trainer.max_steps=2")
    return run_dir, run_results(run_dir)


def test_offline_then_online_rounds_keep_front_samples_and_publish_the_policy(ric_run) -> None:
    from steerable.methods.ric.stages import OFFLINE_TRAIN, ScoredReply, front_of, origin_subset
    from steerable.run_dir import read_jsonl

    run_dir, results = ric_run
    offline, online = results["offline"], results["online"]
    assert offline["objectives"] == ["verbosity", "positivity"] and offline["steps"] == 2
    train = read_jsonl(run_dir / OFFLINE_TRAIN, ScoredReply, "offline")
    assert len(train) == offline["train_examples"] + offline["dropped"]
    scores = torch.tensor([r.scores for r in train])
    assert (
        scores.mean(0).abs().max() < 0.1 and (scores.std(0, correction=0) - 1).abs().max() < 0.1
    )  # z-scored
    scale = ScoreScale.from_dict(offline["scale"])
    assert "<rm1_score>" in train[0].conditioned(scale)[-2]["content"]
    made_before_tags = {k: v for k, v in offline["scale"].items() if k != "tags"}  # an older run's metadata
    assert ScoreScale.from_dict(made_before_tags).text([0.5, -1.0]) == "<rm1_score> 0.5 <rm2_score> -1.0"
    rounds = online["rounds"]
    assert len(rounds) == 2 and all(r["steps"] == 1 for r in rounds)
    method = validate(compose_config("train", [*TINY_RUN, *RIC])).method
    origin = len(origin_subset(train, method, 0))
    assert origin == len(front_of(train, 0.7)) < len(train)
    kept = [len(read_jsonl(run_dir / f"online_{i}" / "kept.jsonl", ScoredReply, "online")) for i in (1, 2)]
    assert [r["kept"] for r in rounds] == kept and all(
        k <= r["generated"] for k, r in zip(kept, rounds, strict=True)
    )
    assert rounds[1]["trained_on"] - rounds[0]["trained_on"] == kept[1]  # the online pool accumulates
    meta = json.loads((run_dir / "checkpoints" / "final" / "steerable.json").read_text())
    assert meta["kind"] == "ric" and meta["ric"]["mapping"] == "linf"


def test_the_policy_maps_weights_to_requested_rewards_in_the_prompt(ric_run) -> None:
    run_dir, _ = ric_run
    policy = load_policy(run_dir)
    (control,) = policy.controls()
    assert (control.name, control.kind, control.options) == (
        "weights",
        "weights",
        ("verbosity", "positivity"),
    )
    s = policy.scale
    chat = [{"role": "user", "content": "Any tips?"}]
    for w in ([0.3, 0.7], [1.0, 0.0]):
        values = policy.resolve({"weights": w})
        wanted = paper_mapping(w, list(s.low), list(s.high))
        assert policy.requested(values) == pytest.approx(wanted)
        text = f"Any tips? <rm1_score> {format_score(wanted[0], 1)} <rm2_score> {format_score(wanted[1], 1)}"
        assert text in policy.plain_prompt(chat, values)
    completions = policy.generate([chat], {"weights": [0.3, 0.7]}, GenerationSettings(max_new_tokens=3))
    assert len(completions) == 1
    with pytest.raises(ConfigError, match="sum to 1"):
        policy.resolve({"weights": [0.3, 0.3]})


def test_train_and_generate_clis_run_ric_with_debug_fast(tmp_path) -> None:
    """In this process (tests/test_cli.py starts each CLI in its own)."""
    args = [*TINY, *RIC, "debug=fast", "method.online_iterations=1", "logger=csv", f"output_root={tmp_path}"]
    args.append("method.tags=names")  # the objectives' names in place of the paper's <rm1_score>, ...
    result = run_cli("train", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = list((tmp_path / "ric").iterdir())
    assert (run_dir / "online_1" / "checkpoints" / "final" / "adapter_model.safetensors").is_file()
    shown = {}
    for w in ("[0.3,0.7]", "[0.9,0.1]"):
        gen = run_cli(
            "generate",
            f"run={run_dir}",
            f"weights={w}",
            "prompt=Any tips?",
            "sampling.max_new_tokens=3",
            cwd=tmp_path,
        )
        assert gen.returncode == 0, gen.stderr[-2000:]
        shown[w] = next(line for line in gen.stderr.splitlines() if "requested rewards" in line)
    assert shown["[0.3,0.7]"] != shown["[0.9,0.1]"]
    assert "<verbosity_score>" in shown["[0.3,0.7]"] and "<positivity_score>" in shown["[0.3,0.7]"]
    meta = json.loads((run_dir / "checkpoints" / "final" / "steerable.json").read_text())
    assert meta["ric"]["scale"]["tags"] == ["<verbosity_score>", "<positivity_score>"]  # what training wrote
    bad = run_cli("generate", f"run={run_dir}", "weights=[0.5]", "prompt=hi", cwd=tmp_path)
    assert bad.returncode != 0 and "weights" in bad.stderr


def test_an_interrupted_online_stage_skips_its_finished_rounds(ric_run, tmp_path) -> None:
    """Rounds whose adapter and kept samples exist are not generated or trained again; the last one is published."""
    from safetensors.torch import load_file

    from steerable.methods.base import RunContext
    from steerable.methods.ric.stages import online_stage
    from steerable.pipeline import StageResults

    run_dir = tmp_path / "run"  # a copy: the stage runs in it
    shutil.copytree(ric_run[0], run_dir)
    cfg = validate(compose_config("train", [*TINY_RUN, *RIC, "trainer.max_steps=2"]))
    ctx = RunContext(cfg=cfg, run_dir=run_dir)
    done = StageResults.finished(run_dir, ["offline", "online"])
    assert online_stage(ctx, done) == {"rounds": [], "online_steps": 1}  # nothing left to do
    published = load_file(run_dir / "checkpoints" / "final" / "adapter_model.safetensors")
    last = load_file(run_dir / "online_2" / "checkpoints" / "final" / "adapter_model.safetensors")
    assert published.keys() == last.keys() and all(torch.equal(published[k], last[k]) for k in last)


def test_a_run_whose_saved_tags_do_not_match_its_objectives_fails_naming_the_folder(
    ric_run, tmp_path
) -> None:
    """A run folder is untrusted: bad RiC metadata is one error naming the run and the field, before loading."""
    from steerable.methods.ric.policy import load_ric_policy
    from steerable.policies.runs import METADATA_FILE
    from steerable.run_dir import FINAL_MODEL_DIR, RunDirError

    run_dir, _ = ric_run
    meta = json.loads((run_dir / FINAL_MODEL_DIR / METADATA_FILE).read_text())
    broken = tmp_path / "broken"
    (broken / FINAL_MODEL_DIR).mkdir(parents=True)
    meta["ric"]["scale"]["tags"] = ["<verbosity_score>"]
    (broken / FINAL_MODEL_DIR / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(
        RunDirError, match=f"run={re.escape(str(broken))}: .*tags has 1 entries for 2 objectives"
    ):
        load_ric_policy(broken)
    meta["ric"]["scale"].pop("tags")
    meta["ric"]["mapping"] = "cubic"
    (broken / FINAL_MODEL_DIR / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(RunDirError, match=r"RiC mapping must be one of .* got 'cubic'"):
        load_ric_policy(broken)
