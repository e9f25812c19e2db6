"""`steerable-generate`: sample from a model, or from a trained run folder, with one prompt."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig

from steerable.cli.common import (
    CONF_DIR,
    check_composition,
    check_run_argument,
    machine_hardware,
    report_user_errors,
    set_threads,
    setup_hydra,
    validate,
)
from steerable.config.schema import ConfigError, GenerateConfig

if TYPE_CHECKING:
    from steerable.generation import GenerationSettings

log = logging.getLogger("steerable")


def generate(cfg: GenerateConfig) -> list[str]:
    """Completions of `cfg.prompt` from the run's policy (or the bare model) under the requested controls."""
    from steerable.methods.registry import load_policy
    from steerable.policies.plain import base_policy

    set_threads(cfg.hardware.torch_threads)
    try:
        policy = load_policy(Path(cfg.run)) if cfg.run is not None else base_policy(cfg.model)
    except FileNotFoundError as err:
        raise ConfigError(f"run={cfg.run}: {err}") from None
    policy.generation = cfg.generation
    values = policy.resolve(requested_controls(cfg))
    if described := policy.describe(values):
        print(described, file=sys.stderr)  # what the model is conditioned on
    if cfg.hardware.accelerator == "gpu":
        policy.to("cuda")
    messages = ([{"role": "system", "content": cfg.system}] if cfg.system else []) + [
        {"role": "user", "content": cfg.prompt}
    ]
    return [c.text for c in policy.generate([messages], values, settings_of(cfg))]


def requested_controls(cfg: GenerateConfig) -> dict[str, Any]:
    """`controls.*` plus the shorthands `attributes.<name>=`, `weights=` and `preference=` (same names)."""
    from steerable.policies.base import flatten

    controls = flatten(cfg.controls)
    controls |= flatten({"attributes": dict(cfg.attributes)}) if cfg.attributes else {}
    controls |= {"weights": list(cfg.weights)} if cfg.weights else {}
    controls |= {"preference": cfg.preference} if cfg.preference else {}
    return controls


def settings_of(cfg: GenerateConfig) -> GenerationSettings:
    from steerable.generation import settings_from

    return settings_from(cfg.sampling, num_return_sequences=cfg.num_return_sequences, seed=cfg.seed)


@hydra.main(config_path=CONF_DIR, config_name="generate", version_base="1.3")
@report_user_errors
def _main(dict_cfg: DictConfig) -> None:
    from steerable.hardware import inference_autocast

    cfg, _ = machine_hardware(validate(dict_cfg))
    with inference_autocast(cfg.hardware):
        texts = generate(cfg)
    for i, text in enumerate(texts):
        if cfg.num_return_sequences > 1:
            print(f"--- sample {i + 1}")
        print(text)


def quoted_preference(arg: str) -> str:
    """`preference=a, b` (and `controls.preference=a, b`) quoted, so the comma is not read as a sweep or list."""
    key, _, value = arg.partition("=")
    if key.lstrip("+") not in ("preference", "controls.preference") or value[:1] in ("'", '"'):
        return arg
    return f"{key}='{value}'"


def main() -> None:
    setup_hydra()
    # Control names come from the run, not the config, so `attributes.humor=4` and `controls.x=...` need no '+'.
    sys.argv = [f"+{a}" if a.startswith(("attributes.", "controls.")) else a for a in sys.argv]
    sys.argv = [quoted_preference(a) for a in sys.argv]
    check_run_argument(sys.argv[1:], required=False, example="")
    check_composition("generate", sys.argv[1:])
    _main()


if __name__ == "__main__":
    main()
