"""One `sampling` block for every config that samples: no schema declares a decoding key of its own, a block
becomes generation settings one way, its checks name the full key, and a run folder saved before the keys were
nested (flat `method.max_new_tokens`) still reads."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from steerable.config.benchmark import BenchmarkConfig
from steerable.config.sampling import (
    SAMPLING_KEYS,
    SamplingConfig,
    check_sampling,
    dataclass_in,
    moved_key_hint,
    nest_flat_sampling,
)
from steerable.config.schema import (
    ConfigError,
    EvalConfig,
    GenerateConfig,
    ReportConfig,
    ServeConfig,
    TrainConfig,
)
from steerable.evaluation.suite import load_suite
from steerable.generation import GenerationSettings, settings_from
from steerable.methods.registry import specs
from steerable.methods.steerlm.config import SteerLMConfig
from steerable.methods.superhf.config import SuperHFConfig
from steerable.policies.runs import run_config

# Fields named like a decoding key that mean something else.
NOT_DECODING = {
    "SuperHFConfig.top_k",  # completions kept per prompt
    "ServeLimits.max_new_tokens",  # the most a request may ask for
    "SuiteSamplingChanges.max_new_tokens",  # eval.suite.sampling.*: changes to a suite's sampling block
    "SuiteSamplingChanges.do_sample",
}


def schemas() -> list[type]:
    """Every config dataclass reachable from the run configs and the method schemas."""
    found: list[type] = []
    todo = [TrainConfig, EvalConfig, GenerateConfig, ServeConfig, *(s.config for s in specs().values())]
    while todo:
        schema = todo.pop()
        if schema in found or schema is SamplingConfig:
            continue
        found.append(schema)
        todo += [d for hint in typing.get_type_hints(schema).values() if (d := dataclass_in(hint))]
    return found


def test_no_schema_declares_a_decoding_key_outside_its_sampling_block() -> None:
    flat = [
        f"{schema.__name__}.{f.name}"
        for schema in schemas()
        for f in dataclasses.fields(schema)
        if f.name in SAMPLING_KEYS and f"{schema.__name__}.{f.name}" not in NOT_DECODING
    ]
    assert not flat, f"nest these under `sampling: SamplingConfig`: {flat}"


def test_settings_take_the_block_and_the_callers_run_time_values() -> None:
    sampling = SamplingConfig(max_new_tokens=9, do_sample=True, temperature=0.5, top_k=3, stop=["\n"])
    settings = settings_from(sampling, num_return_sequences=2, seed=7)
    assert settings == GenerationSettings(
        max_new_tokens=9,
        do_sample=True,
        temperature=0.5,
        top_k=3,
        stop=["\n"],
        num_return_sequences=2,
        seed=7,
    )
    assert settings.stop is not sampling.stop  # the engine may not change the config's list


def test_checks_name_the_full_key() -> None:
    report = ReportConfig(sampling=SamplingConfig(top_p=0.0))
    with pytest.raises(ConfigError, match=r"^report\.sampling\.top_p must be in \(0, 1\]"):
        check_sampling(report, "report")
    with pytest.raises(ConfigError, match=r"^max_new_tokens must be at least 1"):
        GenerationSettings(max_new_tokens=0)


def test_a_flat_key_on_the_command_line_names_its_new_home() -> None:
    error = "Could not override 'method.eval.max_new_tokens'. Key 'max_new_tokens' not in 'PCMEvalSettings'"
    assert moved_key_hint(error) == "method.eval.max_new_tokens is now method.eval.sampling.max_new_tokens"
    assert moved_key_hint("Could not override 'method.lrr'.") == ""
    assert moved_key_hint("full_key: method.sampling.top_k") == ""


# ------------------------------------------------------------------------------------ runs saved before


OLD_STEERLM_RUN = {
    "method": {
        "name": "steerlm",
        "bootstrap": {"num_prompts": 4, "top_k": 20, "temperature": 0.9, "max_new_tokens": 32},
        "steerlm2": {"samples_per_prompt": 3, "temperature": 0.6, "top_p": 0.8, "max_new_tokens": 24},
        "eval": {"num_prompts": 5, "max_new_tokens": 96, "batch_size": 4},
    },
    "report": {"num_samples": 2, "max_new_tokens": 8, "do_sample": True, "temperature": 0.5, "top_p": 0.7},
    "benchmark": {
        "name": "demo",
        "arm": "steerlm",
        "objectives": {"a": {"reward": {"type": "length"}}, "b": {"reward": {"type": "sentiment"}}},
        "reference": [-5.0, -1.0],
        "max_new_tokens": 40,
        "do_sample": False,
    },
}
OLD_SUPERHF_RUN = {"method": {"name": "superhf", "top_k": 2, "top_p": 0.9, "max_new_tokens": 16}}


def saved_run(folder: Path, config: dict) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(config), folder / ".hydra" / "config.yaml")
    return folder


def test_a_run_saved_with_flat_sampling_keys_reads_in_todays_shape(tmp_path) -> None:
    run = saved_run(tmp_path / "steerlm", OLD_STEERLM_RUN)
    method: SteerLMConfig = run_config(run, "method", SteerLMConfig)
    assert method.bootstrap.sampling == SamplingConfig(
        max_new_tokens=32, do_sample=True, temperature=0.9, top_k=20
    )  # keys the old run did not set keep this section's defaults (do_sample) rather than the class's
    assert method.bootstrap.num_prompts == 4
    assert method.steerlm2.sampling == SamplingConfig(
        max_new_tokens=24, do_sample=True, temperature=0.6, top_p=0.8
    )
    assert method.eval.sampling.max_new_tokens == 96 and method.eval.batch_size == 4
    report: ReportConfig = run_config(run, "report", ReportConfig)
    assert report.sampling == SamplingConfig(max_new_tokens=8, do_sample=True, temperature=0.5, top_p=0.7)
    suite = load_suite(None, [run], {"sampling.max_new_tokens": 12})
    assert isinstance(suite, BenchmarkConfig) and suite.sampling.max_new_tokens == 12
    assert (suite.sampling.temperature, suite.sampling.top_p) == (0.7, 0.9)  # the suite's defaults


def test_a_key_that_only_shares_a_decoding_name_stays_where_it_is(tmp_path) -> None:
    run = saved_run(tmp_path / "superhf", OLD_SUPERHF_RUN)
    method: SuperHFConfig = run_config(run, "method", SuperHFConfig)
    assert method.top_k == 2  # completions kept per prompt, not top-k sampling
    assert method.sampling.top_k is None
    assert (method.sampling.top_p, method.sampling.max_new_tokens) == (0.9, 16)


def test_an_already_nested_section_passes_unchanged() -> None:
    section = {"name": "superhf", "top_k": 2, "sampling": {"top_p": 0.9}}
    assert nest_flat_sampling(section, SuperHFConfig) == section
    assert nest_flat_sampling(None, BenchmarkConfig) is None
