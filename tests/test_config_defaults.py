"""One source of truth for config defaults: the dataclass schemas. A YAML option sets only what differs from its
schema (and never a key the schema lacks), every option still composes and validates, and the method specs agree
with their config files and with Hydra's registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from steerable.cli.common import CONF_DIR, setup_hydra, validate
from steerable.config.reward import REWARD_SCHEMAS, RewardSpec
from steerable.config.schema import (
    DataConfig,
    EvalConfig,
    EvalSettings,
    HardwareConfig,
    LoggerConfig,
    ModelConfig,
    TrainConfig,
)
from steerable.methods.registry import specs
from tests.conftest import compose_config

CONF = Path(CONF_DIR)
SCHEMAS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "hardware": HardwareConfig,
    "logger": LoggerConfig,
    "eval": EvalSettings,
}
PRIMARY: dict[str, type] = {"train": TrainConfig, "eval": EvalConfig}

# Deliberate restatements: the value an option is named after, stated so that the option keeps its meaning
# if the schema default ever changes (`hardware=cpu` must stay on the CPU).
ALLOWED: dict[tuple[str, str], set[str]] = {
    ("model", "hf"): {"source"},
    ("data", "demo"): {"format"},
    ("hardware", "cpu"): {"accelerator"},
    ("logger", "csv"): {"csv"},
}
# Values an option needs from the user before it validates (as a user would pass them).
NEEDS: dict[tuple[str, str], list[str]] = {
    ("model", "hf"): ["model.name_or_path=some/model"],
    ("data", "jsonl"): ["data.path=x.jsonl"],
}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def reward_schema(option: str) -> type:
    """The typed spec a conf/reward file extends (its `/reward_schema_<kind>@_here_` defaults entry)."""
    defaults = list(OmegaConf.load(CONF / "reward" / f"{option}.yaml").get("defaults", []))
    kinds = [d.split("@")[0].removeprefix("/reward_schema_") for d in defaults if "reward_schema_" in str(d)]
    assert len(kinds) == 1, f"reward/{option}.yaml must extend one /reward_schema_<kind>: {defaults}"
    return REWARD_SCHEMAS[kinds[0]]


def schema_of(group: str, option: str) -> type:
    if group == "reward":
        return reward_schema(option)
    return specs()[option].config if group == "method" else SCHEMAS[group]


def option_body(path: Path) -> dict[str, Any]:
    """The keys an option file sets for its group (a `_global_` option nests them under the group's name)."""
    body = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    assert isinstance(body, dict)
    if "# @package _global_" in path.read_text():
        body = body.get(path.parent.name, {})
    return {k: v for k, v in body.items() if k != "defaults"}


def compare(body: dict[str, Any], schema: type) -> tuple[list[str], list[str]]:
    """(keys the schema lacks, keys that restate the schema default), as dotted paths."""
    default = OmegaConf.structured(schema)
    plain_default = OmegaConf.to_container(default, resolve=False, enum_to_str=True)

    def unknown_keys(node: dict[str, Any], defaults: dict[str, Any], prefix: str) -> list[str]:
        found = []
        for key, value in node.items():
            if key not in defaults:
                found.append(f"{prefix}{key}")
            elif isinstance(value, dict) and isinstance(defaults[key], dict):
                found += unknown_keys(value, defaults[key], f"{prefix}{key}.")
        return found

    unknown = unknown_keys(body, plain_default, "")
    if unknown:
        return unknown, []
    # typed as the schema types them (0 -> 0.0, names -> enum members), then compared as plain values
    merged = OmegaConf.to_container(OmegaConf.merge(default, body), resolve=False, enum_to_str=True)

    def restated(
        node: dict[str, Any], defaults: dict[str, Any], typed: dict[str, Any], prefix: str
    ) -> list[str]:
        found = []
        for key, value in node.items():
            if isinstance(value, dict) and isinstance(defaults[key], dict):
                found += restated(value, defaults[key], typed[key], f"{prefix}{key}.")
            elif (value if value == "???" else typed[key]) == defaults[key]:  # a merge skips ???
                found.append(f"{prefix}{key}")
        return found

    return [], restated(body, plain_default, merged, "")


GROUP_OPTIONS = [(g, o) for g in ["method", *SCHEMAS, "reward"] for o in options(g)]


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_option_sets_only_what_differs_from_its_schema(group: str, option: str) -> None:
    body = option_body(CONF / group / f"{option}.yaml")
    unknown, restated = compare(body, schema_of(group, option))
    assert not unknown, f"{group}/{option}.yaml sets keys its schema lacks: {unknown}"
    allowed = ALLOWED.get((group, option), set()) | ({"name"} if group == "method" else set())
    extra = sorted(set(restated) - allowed)
    if group == "method" and body.get("stages") == specs()[option].stage_names:
        extra.append("stages")  # null already means every stage of the method
    assert not extra, (
        f"{group}/{option}.yaml restates schema defaults {extra}: delete them (the schema is the one source "
        f"of defaults; move any comment onto the dataclass field)"
    )


@pytest.mark.parametrize("name", sorted(PRIMARY))
def test_primary_config_sets_only_what_differs(name: str) -> None:
    body = option_body(CONF / f"{name}.yaml")
    body = {k: v for k, v in body.items() if k != "hydra"}
    unknown, restated = compare(body, PRIMARY[name])
    assert not unknown and not restated, (unknown, restated)


def test_allow_list_names_real_restatements() -> None:
    """A stale allow-list entry would silently permit a future restatement."""
    for (group, option), keys in ALLOWED.items():
        _, restated = compare(option_body(CONF / group / f"{option}.yaml"), schema_of(group, option))
        assert keys <= set(restated), (group, option, keys - set(restated))


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g, o in GROUP_OPTIONS if g not in ("method", "reward")]
)
def test_option_composes_and_validates(group: str, option: str) -> None:
    primary = "eval" if group == "eval" else "train"  # the method options: tests/test_config.py
    extra = ["run=some/run", "reward=[verbosity]"] if primary == "eval" else []
    cfg = validate(compose_config(primary, [*extra, f"{group}={option}", *NEEDS.get((group, option), [])]))
    assert getattr(cfg, group).name == option


@pytest.mark.parametrize("option", options("reward"))
def test_reward_option_composes_and_validates(option: str) -> None:
    given = {"checkpoint": ["reward.learned.path=x"], "classifier": ["reward.classifier.name_or_path=x"]}
    cfg = validate(compose_config("train", [f"reward=[{option}]", *given.get(option, [])]))
    assert len(cfg.reward) == 1


# ------------------------------------------------------------------------------------------- method specs


@pytest.mark.parametrize("name", sorted(specs()))
def test_spec_stages_are_unique_and_requirements_exist(name: str) -> None:
    spec = specs()[name]
    assert spec.stage_names, name
    assert len(set(spec.stage_names)) == len(spec.stage_names), spec.stage_names
    for stage in spec.stages:
        unknown = [r for r in stage.requires if r not in spec.stage_names or r == stage.name]
        assert not unknown, f"{name}: stage {stage.name} requires {unknown}, not other stages of {name}"
        assert ":" in stage.run, stage.run


@pytest.mark.parametrize("name", sorted(specs()))
def test_spec_config_and_file_agree(name: str) -> None:
    spec = specs()[name]
    default = spec.config()
    assert default.name == name, f"{spec.config.__name__}.name defaults to {default.name!r}, not {name!r}"
    if default.stages is not None:  # an explicit default subset (steerlm) must name real stages
        assert set(default.stages) <= set(spec.stage_names), default.stages
    path = CONF / "method" / f"{name}.yaml"
    assert path.is_file(), f"method {name} has no {path}"
    raw = OmegaConf.load(path)
    assert raw.name == name
    assert f"/method_schema_{name}@_here_" in list(raw.defaults), raw.defaults


def test_every_spec_is_registered_with_hydra() -> None:
    setup_hydra()
    registered = {n.removesuffix(".yaml") for n in ConfigStore.instance().list("/")}
    missing = [n for n in specs() if f"method_schema_{n}" not in registered]
    assert not missing, missing
    assert sorted(options("method")) == sorted(specs()), "every conf/method file is a spec and vice versa"


# ------------------------------------------------------------------------------------------- reward specs


@pytest.mark.parametrize("kind", sorted(REWARD_SCHEMAS))
def test_reward_spec_mirrors_its_scorer(kind: str) -> None:
    """A typed spec has exactly its scorer's keyword arguments, with the constructor's defaults: the scorer stays
    the one source of its defaults, and the schema cannot drift from it."""
    import inspect
    from enum import Enum

    from steerable.rewards.base import _REGISTRY, _resolve

    schema = REWARD_SCHEMAS[kind]
    for type_name in schema.TYPES:
        params = inspect.signature(_resolve(_REGISTRY[type_name])).parameters
        spec = OmegaConf.to_container(OmegaConf.structured(schema), enum_to_str=True)
        spec = {k: v for k, v in spec.items() if k not in ("type", "args")}
        assert sorted(spec) == sorted(params), (kind, type_name)
        for name, value in spec.items():
            default = params[name].default
            default = default.value if isinstance(default, Enum) else default
            default = list(default) if isinstance(default, tuple) else default
            if default is inspect.Parameter.empty:
                assert value == "???", f"{schema.__name__}.{name} is required by the scorer"
            else:
                assert value == default, (
                    f"{schema.__name__}.{name}={value!r}, the scorer's default is {default!r}"
                )


def test_reward_keys_are_checked_at_composition() -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match=r"reward\.verbosity\.unti"):
        compose_config("train", ["reward=[verbosity]", "reward.verbosity.unti=words"])
    with pytest.raises(ConfigCompositionException, match=r"reward\.verbosity\.unit"):
        compose_config("train", ["reward=[verbosity]", "reward.verbosity.unit=chars"])
    with pytest.raises(Exception, match=r"reward\.verbosity\.type=sentiment does not match"):
        validate(compose_config("train", ["reward=[verbosity]", "reward.verbosity.type=sentiment"]))
    cfg = validate(compose_config("eval", ["run=x", "eval=generations", "reward=[positivity]"]))
    assert isinstance(cfg.reward["positivity"], RewardSpec) and cfg.reward["positivity"].outputs == [
        "compound"
    ]


def test_typed_and_plain_specs_build_the_same_source() -> None:
    """A run's validated spec and the plain dict a saved run's config holds give the same scorer."""
    from steerable.rewards.base import build_reward_source

    cfg = validate(compose_config("train", ["reward=[verbosity]"]))
    typed = build_reward_source(cfg.reward["verbosity"])
    plain = build_reward_source({"type": "length", "unit": "words", "log_scale": True})
    texts = ["a b c", "one two three four five six"]
    assert typed.score(["p", "p"], texts).tolist() == plain.score(["p", "p"], texts).tolist()
    custom = build_reward_source(RewardSpec(type="length", args={"unit": "words", "target": 3.0}))
    assert custom.score(["p"], ["a b c"]).item() == 0.0
