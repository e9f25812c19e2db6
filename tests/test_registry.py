"""Methods are found from their packages; everything central is derived from the specs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from steerable.config.schema import ConfigError
from steerable.methods.registry import check_stages, describe, evaluations, resolve, spec_of, specs


def test_every_method_package_is_discovered() -> None:
    expected = {"sft", "reward_model", "attribute_model", "steerlm", "superhf", "clp", "rewarded_soups", "rl"}
    assert expected | {"pcm", "dpo"} <= set(specs())


def test_every_stage_target_resolves_to_a_function() -> None:
    for spec in specs().values():
        for stage in spec.stages:
            assert callable(resolve(stage.run)), f"{spec.name}.{stage.name}: {stage.run}"


def test_a_spec_is_named_by_its_config_and_its_targets_are_relative_to_its_package() -> None:
    from steerable.methods.registry import Evaluation, MethodSpec, Stage
    from steerable.methods.sft.config import SFTConfig

    spec = MethodSpec(
        summary="planted",
        config=SFTConfig,
        stages=(Stage("train"), Stage("eval", ".other:evaluate"), Stage("x", "elsewhere.module:run")),
        evaluation=Evaluation("kind", ".evaluate:eval_kind"),
        policy=".policy:load",
    ).anchored("pkg.method")
    assert spec.name == "sft"  # SFTConfig's default name
    assert [s.run for s in spec.stages] == [
        "pkg.method.stages:train_stage",
        "pkg.method.other:evaluate",
        "elsewhere.module:run",
    ]
    assert (spec.evaluation.run, spec.policy) == ("pkg.method.evaluate:eval_kind", "pkg.method.policy:load")
    assert specs()["pcm"].stage("pcm").run == "steerable.methods.pcm.stages:pcm_stage"  # as discovered


def test_unknown_method_and_stage_name_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"methods: .*sft"):
        spec_of("nonesuch")
    with pytest.raises(
        ConfigError, match=r"method.stages=\['train', 'bogus'\].*allowed: \['train', 'eval'\]"
    ):
        check_stages(spec_of("sft"), ["train", "bogus"])


def test_method_owned_eval_kinds_come_from_the_specs() -> None:
    assert {"steerability", "superhf", "pareto", "pcm", "reward_accuracy"} <= set(evaluations())


def test_train_help_lists_every_method_and_its_stages() -> None:
    text = describe()
    for spec in specs().values():
        assert f"  {spec.name} " in text
        assert all(f"      {s.name}" in text for s in spec.stages)
    shown = subprocess.run(
        [sys.executable, "-c", "from steerable.cli.train import main; main()", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert (
        "== Methods" in shown
        and "steerlm2 (needs apm, annotate, acsft, baseline; uses bootstrap if run; produces path)" in shown
        and "pcm (needs experts; produces controller)" in shown
    )
