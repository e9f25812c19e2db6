"""SteerLM: the label format and its loss mask, the schema's order and range, annotation, bootstrapping,
stage caching and artifact reuse, and steered generation through the trained template."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from steerable.backbone import load_backbone
from steerable.backbone.tiny import build_tiny_tokenizer
from steerable.cli.common import validate
from steerable.cli.train import run
from steerable.config.schema import ConfigError
from steerable.data.records import Conversation, Turn
from steerable.data.tokenize import IGNORE_INDEX, end_of_turn_id, tokenize_conversation, tokenize_prompt
from steerable.methods.steerlm.annotator import Annotator
from steerable.methods.steerlm.attributes import (
    AttributeSchema,
    conditioned_messages,
    default_values,
    parse_assignments,
    schema_names,
    steered_prompt,
)
from steerable.methods.steerlm.io import attribute_model_dir, read_conversations, write_conversations
from steerable.rewards.scoring_model import ScorerMeta, ScoringModel, save_scorer
from tests.conftest import TINY_RUN, compose_config, run_cli
from tests.test_backbone import tiny_config

SCHEMA = AttributeSchema(("quality", "humor"), (0, 4), "<extra_id_2>", {"quality": 4, "humor": 0})


def two_turns() -> Conversation:
    return Conversation(
        turns=[
            Turn("user", "hi"),
            Turn("assistant", "yo", {"humor": 3.2, "quality": 4.0}),
            Turn("user", "and?"),
            Turn("assistant", "ab c", {"quality": 1}),
        ]
    )


# ------------------------------------------------------------------------------------------ label format


def test_label_string_follows_schema_order_and_skips_missing() -> None:
    assert SCHEMA.label({"humor": 2, "quality": 4}) == "quality:4,humor:2"
    assert SCHEMA.prefix({"humor": 1}) == "<extra_id_2>humor:1\n"
    assert SCHEMA.clamp_round({"quality": 5.7, "humor": -0.6, "other": 3}) == {"quality": 4, "humor": 0}


def test_resolve_enforces_names_range_and_integers() -> None:
    assert SCHEMA.resolve({"humor": 3}) == {"quality": 4, "humor": 3}
    with pytest.raises(ConfigError, match=r"unknown \['toxicity'\]"):
        SCHEMA.resolve({"toxicity": 1})
    with pytest.raises(ConfigError, match=r"attributes\.humor=5.*\[0, 4\]"):
        SCHEMA.resolve({"humor": 5})
    with pytest.raises(ConfigError, match=r"humor=2.5"):
        SCHEMA.resolve({"humor": 2.5})
    no_defaults = AttributeSchema(("quality", "humor"))
    with pytest.raises(ConfigError, match="no value or default"):
        no_defaults.resolve({"humor": 1})


def test_presets_and_assignment_parsing() -> None:
    assert schema_names("auto", [], "oasst1", []) == ["quality", "toxicity", "humor", "creativity"]
    assert schema_names("auto", [], "helpsteer2", [])[:2] == ["helpfulness", "correctness"]
    assert schema_names("auto", [], "jsonl", ["zeal", "humor", "quality"]) == ["quality", "humor", "zeal"]
    assert schema_names("oasst", ["humor"], "oasst1", []) == ["humor"]
    assert parse_assignments(["quality:4", "humor:0"], "k") == {"quality": 4, "humor": 0}
    with pytest.raises(ConfigError, match=r"method\.bootstrap\.condition: 'quality=4'"):
        parse_assignments(["quality=4"], "method.bootstrap.condition")


def test_defaults_good_end_else_commonest_else_middle_of_a_tie() -> None:
    labelled = [{"verbosity": v, "positivity": p} for v in range(5) for p in (0, 1, 1, 3, 3)]
    defaults = default_values(["quality", "toxicity", "verbosity", "positivity", "unseen"], (0, 4), labelled)
    # balanced verbosity: the middle, not the first value seen; positivity tie 1 vs 3: both 1 from the middle,
    # the lower wins; no labels at all: the middle
    assert defaults == {"quality": 4, "toxicity": 0, "verbosity": 2, "positivity": 1, "unseen": 2}
    skewed = [{"verbosity": 0}] * 3 + [{"verbosity": 4}]
    assert default_values(["verbosity"], (0, 4), skewed) == {"verbosity": 0}


def test_label_tokens_get_no_loss_and_reply_tokens_do() -> None:
    tok = build_tiny_tokenizer()  # byte-level: token positions are character offsets of the rendering
    messages, prefixes = conditioned_messages(two_turns(), SCHEMA)
    ex = tokenize_conversation(tok, messages, end_of_turn_id(tok), prefixes)
    text = tok.decode(ex.input_ids)
    first_label = "<extra_id_2>quality:4,humor:3\n"
    second_label = "<extra_id_2>quality:1\n"
    assert f"assistant\n{first_label}yo<|im_end|>" in text and f"assistant\n{second_label}ab c" in text

    def positions(fragment: str) -> list[int]:
        start = len(tok(text[: text.index(fragment)], add_special_tokens=False).input_ids)
        return list(range(start, start + len(tok(fragment, add_special_tokens=False).input_ids)))

    targets = [i for i, label in enumerate(ex.labels) if label != IGNORE_INDEX]
    assert targets == positions("yo<|im_end|>") + positions("ab c<|im_end|>")
    for label_position in positions(first_label) + positions(second_label):
        assert ex.labels[label_position] == IGNORE_INDEX


def test_inference_prompt_is_the_trained_prefix() -> None:
    tok = build_tiny_tokenizer()
    conv = Conversation(
        turns=[Turn("user", "Tell me a joke."), Turn("assistant", "Why not.", {"quality": 4})]
    )
    messages, prefixes = conditioned_messages(conv, SCHEMA)
    ex = tokenize_conversation(tok, messages, end_of_turn_id(tok), prefixes)
    first_target = next(i for i, label in enumerate(ex.labels) if label != IGNORE_INDEX)
    prompt = steered_prompt(tok, conv.messages[:1], SCHEMA, {"quality": 4})
    # The label had no humor value in training; inference writes exactly the trained bytes for the same values.
    assert tok(prompt, add_special_tokens=False).input_ids == ex.input_ids[:first_target]
    assert (
        tokenize_prompt(tok, conv.messages[:1])
        == ex.input_ids[: len(tokenize_prompt(tok, conv.messages[:1]))]
    )


# -------------------------------------------------------------------------------------- annotation (fake APM)


def constant_apm(folder: Path, names: list[str], outputs: list[float]) -> Path:
    """An attribute model whose head ignores the text and predicts `outputs` (known labels for the tests)."""
    model_cfg = tiny_config()
    backbone, tokenizer = load_backbone(model_cfg)
    model = ScoringModel(backbone, len(names))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor(outputs))
    meta = ScorerMeta(
        kind="attribute_model",
        names=names,
        value_range=[0, 4],
        max_length=256,
        model=OmegaConf.to_container(OmegaConf.structured(model_cfg), enum_to_str=True),
    )
    return save_scorer(model, tokenizer, meta, folder)


@pytest.fixture(scope="module")
def fake_apm(tmp_path_factory) -> Path:
    # predicts verbosity 5.6 (clamped to 4), positivity -0.7 (clamped to 0), and an extra output 2.4
    return constant_apm(
        tmp_path_factory.mktemp("apm") / "final", ["verbosity", "positivity", "extra"], [5.6, -0.7, 2.4]
    )


def test_annotation_replaces_labels_with_clamped_rounded_predictions(fake_apm, tmp_path) -> None:
    annotator = Annotator(str(fake_apm), ["positivity", "verbosity"], (0, 4))
    convs = [Conversation(turns=[Turn("user", "q"), Turn("assistant", "a", {"verbosity": 1.0})], id="c1")]
    (annotated,) = annotator.annotate(convs)
    assert annotated.turns[1].attributes == {"positivity": 0, "verbosity": 4}
    write_conversations(tmp_path / "train.jsonl", [annotated], [[dict(t.attributes) for t in convs[0].turns]])
    row = json.loads((tmp_path / "train.jsonl").read_text())
    assert row["messages"][1]["original_attributes"] == {"verbosity": 1.0}
    assert read_conversations(tmp_path / "train.jsonl")[0].turns[1].attributes == {
        "positivity": 0,
        "verbosity": 4,
    }
    with pytest.raises(ConfigError, match=r"the run needs \['humor'\]"):
        Annotator(str(fake_apm), ["humor"], (0, 4))


# ------------------------------------------------------------------------------------------ pipeline runs

STEERLM = [
    *TINY_RUN,
    "method=steerlm",
    "trainer.max_steps=2",
    "trainer.checkpoint_every_n_steps=1",
    "trainer.limit_val_batches=1",
    "method.eval.num_prompts=2",
    "method.eval.sampling.max_new_tokens=4",
    "method.eval.values=[0,4]",
    "data.val_fraction=0.1",
]


def steerlm_cfg(tmp_path: Path, *extra: str):
    return validate(compose_config("train", [*STEERLM, f"output_root={tmp_path}", *extra]))


STEERLM_HUMAN = [*STEERLM, "method.labels=human", "method.stages=[acsft]"]  # conftest's steerlm_run


def test_human_label_run_then_cached_stages_and_reused_policy(tmp_path) -> None:
    cfg = steerlm_cfg(tmp_path, "method.labels=human", "method.stages=[acsft,eval]", "reward=[verbosity]")
    run_dir = tmp_path / "run"
    results = run(cfg, run_dir)
    final = json.loads((run_dir / "checkpoints/final/steerable.json").read_text())
    assert final["attributes"]["names"] == ["verbosity", "positivity"]
    dials = json.loads((run_dir / "steerability/results.json").read_text())["dials"]
    assert set(dials) == {"verbosity"}  # only the attribute with a scorer named like it
    assert dials["verbosity"]["verbosity (log words)"]["values"] == [0, 4]
    assert "spearman/verbosity/verbosity (log words)" in results["eval"]

    marker = run_dir / "stages/acsft.json"
    stamp = marker.stat().st_mtime_ns
    cfg_again = steerlm_cfg(
        tmp_path, "method.labels=human", "method.stages=[acsft,eval]", f"resume={run_dir}"
    )
    run(cfg_again, run_dir)
    assert marker.stat().st_mtime_ns == stamp  # finished stage skipped

    # A fresh run evaluates that policy without training (method.policy), and no stage trains.
    other = tmp_path / "other"
    run(
        steerlm_cfg(tmp_path, f"method.policy={run_dir}", "method.stages=[eval]", "reward=[verbosity]"), other
    )
    assert not (other / "acsft").exists() and (other / "steerability/results.json").is_file()


def test_apm_artifact_drives_annotation_and_bootstrap_relabels(tmp_path, fake_apm) -> None:
    run_dir = tmp_path / "run"
    cfg = steerlm_cfg(
        tmp_path,
        f"method.apm={fake_apm}",
        "method.stages=[acsft,bootstrap]",  # annotate is pulled in, with the given APM
        "method.bootstrap.num_prompts=3",
        "method.bootstrap.sampling.max_new_tokens=4",
        "method.bootstrap.condition=[verbosity:4]",
    )
    results = run(cfg, run_dir)
    assert results["apm"]["reused"] and not (run_dir / "apm").exists()
    for conv in read_conversations(run_dir / "annotate/train.jsonl"):
        assert conv.turns[-1].attributes == {"verbosity": 4, "positivity": 0}
    samples = [json.loads(line) for line in (run_dir / "bootstrap/samples.jsonl").read_text().splitlines()]
    assert len(samples) == results["bootstrap"]["samples"] > 0
    assert all(
        s["requested"] == {"verbosity": 4, "positivity": 0} for s in samples
    )  # V_hq has one combination
    assert all(s["relabelled"] == {"verbosity": 4, "positivity": 0} for s in samples)
    published = json.loads((run_dir / "checkpoints/final/steerable.json").read_text())
    assert published["steps"] == 2 and published["attributes"]["names"] == ["verbosity", "positivity"]


def test_method_apm_takes_an_attribute_model_or_a_steerlm_run(tmp_path, fake_apm) -> None:
    steerlm_run = tmp_path / "steerlm"  # a SteerLM run that trained its APM: apm/checkpoints/final
    shutil.copytree(fake_apm, steerlm_run / "apm" / "checkpoints" / "final")
    assert attribute_model_dir(str(steerlm_run)) == steerlm_run / "apm" / "checkpoints" / "final"
    assert attribute_model_dir(str(fake_apm)) == fake_apm
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"a SteerLM run that trained one") as err:
        attribute_model_dir(str(empty))
    assert str(err.value).count(str(empty)) == 1  # says the path once


def test_config_errors_name_the_key(tmp_path, fake_apm) -> None:
    with pytest.raises(ConfigError, match=r"method\.labels=human"):
        validate(compose_config("train", [*STEERLM, "data=hh-rlhf", "method.labels=human"]))
    with pytest.raises(ConfigCompositionException, match=r"method\.preset"):  # an Enum: fails at composition
        steerlm_cfg(tmp_path, "method.preset=everything")
    cfg = steerlm_cfg(
        tmp_path, f"method.apm={fake_apm}", "method.stages=[annotate]", "method.attributes=[humor]"
    )
    with pytest.raises(ConfigError, match=r"needs \['humor'\]"):
        run(cfg, tmp_path / "bad")
    cfg = steerlm_cfg(
        tmp_path, "method.labels=human", "method.stages=[acsft]", "method.inference_defaults=[verbosity:9]"
    )
    with pytest.raises(ConfigError, match=r"method.inference_defaults.verbosity=9"):
        run(cfg, tmp_path / "bad2")


def test_generate_and_eval_cli_on_a_steerlm_run(tmp_path, steerlm_run) -> None:
    """In this process (tests/test_cli.py starts each CLI in its own); the run is copied, as eval writes in it."""
    run_dir = tmp_path / "run"
    shutil.copytree(steerlm_run, run_dir)
    ok = run_cli(
        "generate",
        f"run={run_dir}",
        "attributes.verbosity=4",
        "prompt=Any tips?",
        "sampling.max_new_tokens=4",
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "attribute label: verbosity:4,positivity:" in ok.stderr + ok.stdout
    bad = run_cli("generate", f"run={run_dir}", "attributes.humor=4", "prompt=hi", cwd=tmp_path)
    assert bad.returncode != 0 and "unknown ['humor']" in bad.stderr
    bad = run_cli("generate", f"run={run_dir}", "attributes.verbosity=7", "prompt=hi", cwd=tmp_path)
    assert bad.returncode != 0 and "attributes.verbosity=7" in bad.stderr
    evaluated = run_cli(
        "eval",
        f"run={run_dir}",
        "eval=steerability",
        "eval.num_prompts=2",
        "eval.sampling.max_new_tokens=4",
        "reward=[positivity]",
        cwd=tmp_path,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    (out,) = list((run_dir / "eval/steerability").iterdir())
    dials = json.loads((out / "results.json").read_text())["dials"]
    assert (
        list(dials) == ["positivity"]
        and len(dials["positivity"]["positivity (VADER compound, -1 to 1)"]["values"]) == 2
    )  # the run's own dial values
    assert list(out.glob("dial_positivity*.png"))
