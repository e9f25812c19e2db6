"""Every option of every group composes and validates; bad options, keys and types fail naming the key."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from steerable.cli.common import CONF_DIR, validate
from steerable.config.schema import ConfigError
from steerable.methods.registry import specs
from tests.conftest import compose_config

GROUPS = ["method", "model", "data", "hardware", "logger", "debug"]
# What options of other groups need before they validate; a method's needs are declared in its spec.
OPTION_NEEDS = {
    ("model", "hf"): ["model.name_or_path=some/model"],
    ("data", "jsonl"): ["data.path=x.jsonl"],
}
GPU_ONLY = {"gpu", "ddp", "fsdp", "deepspeed"}


def error_text(err: BaseException) -> str:
    """The message a user sees: Hydra wraps OmegaConf's error, which carries the key."""
    parts = []
    while err is not None:
        parts.append(str(err))
        err = err.__cause__ or err.__context__
    return "\n".join(parts)


def needs(group: str, option: str) -> list[str]:
    """The overrides a user must add to `group=option`: a method's `MethodSpec.needs`; an experiment's are
    those of its method that the experiment does not set itself (a group it overrides, a key it sets)."""
    if group == "method":
        return list(specs()[option].needs)
    if group != "experiment":
        return OPTION_NEEDS.get((group, option), [])
    recipe = OmegaConf.load(Path(CONF_DIR) / "experiment" / f"{option}.yaml")
    chosen = {  # the groups it overrides: {"override /method": "pcm"} entries
        key.removeprefix("override /"): value
        for entry in recipe.get("defaults", [])
        if isinstance(entry, Mapping)
        for key, value in entry.items()
    }
    method = chosen.get("method") or compose_config("train").method.name
    return [
        need
        for need in needs("method", method)
        if need.split("=")[0] not in chosen and OmegaConf.select(recipe, need.split("=")[0]) is None
    ]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def experiments() -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_validates(group: str, option: str) -> None:
    cfg = validate(compose_config("train", [f"{group}={option}", *needs(group, option)]))
    if group in ("method", "model", "data", "hardware", "logger"):
        assert getattr(cfg, group).name == option


@pytest.mark.parametrize("method", [name for name, spec in specs().items() if spec.needs])
def test_a_methods_declared_needs_are_needed(method: str) -> None:
    """`MethodSpec.needs` stays true: without it the default config fails validation, naming the problem."""
    with pytest.raises(ConfigError, match=r"reward|data|pairs"):
        validate(compose_config("train", [f"method={method}"]))


@pytest.mark.parametrize("name", experiments())
def test_every_experiment_composes(name: str) -> None:
    cfg = validate(compose_config("train", [f"experiment={name}", *needs("experiment", name)]))
    assert cfg.task_name == name


def test_generate_config_composes() -> None:
    cfg = validate(compose_config("generate", ["prompt=hello", "model=tiny"]))
    assert cfg.prompt == "hello" and cfg.model.name == "tiny"


def test_unknown_option_names_group_and_choices() -> None:
    with pytest.raises(ConfigCompositionException) as err:
        compose_config("train", ["method=nope"])
    assert "method" in str(err.value) and "sft" in str(err.value)


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigCompositionException) as err:
        compose_config("train", ["method.lrr=1e-4"])
    assert "Key 'lrr' not in 'SFTConfig'" in error_text(err.value) and "method.lrr" in error_text(err.value)


def test_type_error_names_key() -> None:
    with pytest.raises(ConfigCompositionException) as err:
        compose_config("train", ["method.lr=fast"])
    assert "full_key: method.lr" in error_text(err.value) and "Float" in error_text(err.value)


CHOICES = [  # (overrides, a wrong choice, one allowed value): every choice is an Enum, checked at composition
    ([], "hardware.precision=bf17", "bf16-mixed"),
    ([], "model.dtype=int8", "bfloat16"),
    ([], "model.lora.bias=some", "lora_only"),
    ([], "data.half=third", "second"),
    ([], "method.scheduler=exp", "cosine"),
    (["method=reward_model"], "method.pooling=max", "mean"),
    (["method=steerlm"], "method.apm_pooling=max", "mean"),
    (["method=steerlm"], "method.preset=nemo", "helpsteer"),
    (["method=steerlm"], "method.labels=gold", "human"),
    (["method=clp"], "method.variant=lora", "prompt"),
    (["method=clp"], "method.weights_per=step", "example"),
    (["method=rl"], "method.kl_in=both", "loss"),
    (["method=rewarded_soups"], "method.normalize=minmax", "zscore"),
    (["method=pcm"], "method.controller=large", "small"),
    (["method=superhf"], "method.kl_direction=both", "policy_to_ref"),
    (["method=superhf"], "method.kl_aggregation=max", "mean"),
    (["method=superhf"], "method.kl_positions=all", "targets"),
]


@pytest.mark.parametrize(("overrides", "wrong", "allowed"), CHOICES)
def test_enum_value_lists_allowed(overrides: list[str], wrong: str, allowed: str) -> None:
    with pytest.raises(ConfigCompositionException) as err:
        compose_config("train", [*overrides, wrong])
    key, value = wrong.split("=")
    text = error_text(err.value)
    assert f"Invalid value '{value}', expected one of [" in text and allowed in text, text
    assert f"full_key: {key}" in text, text


def test_eval_split_is_a_choice() -> None:
    with pytest.raises(ConfigCompositionException) as err:
        compose_config("eval", ["run=x", "eval.split=test"])
    assert "expected one of [val, all, run]" in error_text(err.value) and "eval.split" in error_text(
        err.value
    )


def test_choices_print_and_compare_as_their_strings() -> None:
    """Code compares choices with strings and writes them into f-strings and JSON (Python 3.11 would print a
    str-mixin Enum as `Name.value`)."""
    import json
    import pickle

    cfg = validate(
        compose_config("train", ["method=superhf", "reward=[verbosity]", "method.reward=verbosity"])
    )
    kl = cfg.method.kl_direction
    assert (
        kl == "ref_to_policy"
        and f"{kl}" == str(kl) == "ref_to_policy"
        and json.dumps(kl) == '"ref_to_policy"'
    )
    assert {"ref_to_policy": 1}[kl] == 1 and pickle.loads(pickle.dumps(kl)) is kl


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["hardware.precision=16-mixed"], "16-mixed"),
        (
            ["hardware.strategy=deepspeed_stage_2"],
            "hardware.strategy=deepspeed_stage_2 runs only on CUDA GPUs",
        ),
        (["model=hf"], "model.name_or_path"),
        (["model.lora.r=0"], "model.lora.r"),
        (["method.stages=[train,bogus]"], "method.stages"),
        (["trainer.max_steps=0"], "trainer.max_steps"),
        (["method=attribute_model", "method.value_range=[4,0]"], "method.value_range"),
        (["method=attribute_model", "data=hh-rlhf"], "attribute labels"),
        (["method=reward_model", "data=demo"], "preference pairs"),
        (["data=oasst1", "data.hub_id=null"], "data.path"),
    ],
)
def test_cross_field_checks_name_the_key(overrides: list[str], needle: str) -> None:
    with pytest.raises((ConfigError, OmegaConfBaseException)) as err:
        validate(compose_config("train", overrides))
    assert needle in str(err.value)
