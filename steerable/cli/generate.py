"""`steerable-generate`: sample from a model, or from a trained run folder, with one prompt."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

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

log = logging.getLogger("steerable")


def generate(cfg: GenerateConfig) -> list[str]:
    from steerable.backbone import load_backbone
    from steerable.generation import HFSampler
    from steerable.methods.base import load_policy

    set_threads(cfg.hardware.torch_threads)
    if cfg.run is not None and is_multi_objective(Path(cfg.run)):
        refuse_controls(cfg, "a clp or rewarded_soups run", "weights=[...] (one per objective)", "weights")
        return weighted_generate(cfg)
    if cfg.run is not None and is_pcm_run(Path(cfg.run)):
        refuse_controls(cfg, "a pcm run", "preference=... (one side per dimension)", "preference")
        return preference_generate(cfg)
    if cfg.preference:
        raise ConfigError(f"preference={cfg.preference!r}: run={cfg.run} is not a method=pcm run")
    if cfg.weights:
        raise ConfigError(f"weights={list(cfg.weights)}: run={cfg.run} is not a clp or rewarded_soups run")
    try:
        model, tokenizer = load_policy(Path(cfg.run)) if cfg.run is not None else load_backbone(cfg.model)
    except FileNotFoundError as err:
        raise ConfigError(f"run={cfg.run}: {err}") from None
    if cfg.hardware.accelerator == "gpu":
        model = model.to("cuda")
    messages = ([{"role": "system", "content": cfg.system}] if cfg.system else []) + [
        {"role": "user", "content": cfg.prompt}
    ]
    prompt, stop = conditioned_prompt(cfg, tokenizer, messages)
    completions = HFSampler(model, tokenizer).generate([prompt], settings_of(cfg, stop))
    return [c.text for c in completions]


def refuse_controls(cfg: GenerateConfig, kind: str, controls: str, accepted: str) -> None:
    """Steering arguments another kind of run would read are errors here, not silently ignored."""
    given = {
        "attributes": [f"attributes.{k}" for k in cfg.attributes],
        "weights": ["weights"] if cfg.weights else [],
        "preference": ["preference"] if cfg.preference else [],
    }
    wrong = [arg for name, args in given.items() if name != accepted for arg in args]
    if wrong:
        raise ConfigError(f"{', '.join(wrong)}: run={cfg.run} is {kind}, whose only control is {controls}")


def settings_of(cfg: GenerateConfig, stop: list[str]):
    from steerable.generation import GenerationSettings

    return GenerationSettings(
        max_new_tokens=cfg.max_new_tokens,
        do_sample=cfg.do_sample,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=cfg.top_k,
        stop=list(cfg.stop) + stop,
        num_return_sequences=cfg.num_return_sequences,
        seed=cfg.seed,
    )


def is_multi_objective(run: Path) -> bool:
    import json

    meta = run / "checkpoints" / "final" / "steerable.json"
    return meta.is_file() and "objectives" in json.loads(meta.read_text())


def check_weights(weights: list[float], objectives: list[str]) -> list[float]:
    """A weighting on the simplex, one entry per objective in the run's order; uniform when none is given."""
    if not weights:
        weights = [1 / len(objectives)] * len(objectives)
        print(f"weights not given: using uniform {weights} over {objectives}", file=sys.stderr)
    if len(weights) != len(objectives):
        raise ConfigError(f"weights={list(weights)} needs one value per objective {objectives}")
    if min(weights) < 0 or abs(sum(weights) - 1) > 1e-6:
        raise ConfigError(
            f"weights={list(weights)} must be non-negative and sum to 1 (objectives {objectives})"
        )
    return list(weights)


def weighted_generate(cfg: GenerateConfig) -> list[str]:
    """A CLP / Rewarded Soups policy at the requested weighting (adapters mixed, or w in the prompt)."""
    import torch

    from steerable.generation import HFSampler
    from steerable.methods.clp.stages import load_steerable_policy

    model, tokenizer, conditioning, meta = load_steerable_policy(Path(cfg.run))
    weights = torch.tensor([check_weights(list(cfg.weights), meta["objectives"])])
    print(f"weights: {dict(zip(meta['objectives'], weights[0].tolist(), strict=True))}", file=sys.stderr)
    if cfg.hardware.accelerator == "gpu":
        model = model.to("cuda")
    messages = ([{"role": "system", "content": cfg.system}] if cfg.system else []) + [
        {"role": "user", "content": cfg.prompt}
    ]
    completions = HFSampler(model, tokenizer).generate(
        [conditioning.prompt(messages, weights[0])],
        settings_of(cfg, []),
        row_context=conditioning.rows(weights),
    )
    return [c.text for c in completions]


def is_pcm_run(run: Path) -> bool:
    return (run / "controller" / "controller.json").is_file()


def preference_generate(cfg: GenerateConfig) -> list[str]:
    """A PCM run: the experts of the requested sides merged token by token with the controller's weights."""
    from steerable.generation.mixture import MixtureSampler
    from steerable.methods.pcm.preferences import combinations, parse_dimensions, parse_preference
    from steerable.methods.pcm.run_eval import load_pcm
    from steerable.methods.pcm.stages import controller_weights

    _, tokenizer, mixer, controller, m = load_pcm(Path(cfg.run))
    dims = parse_dimensions(m.dimensions)
    if not cfg.preference:
        raise ConfigError(
            f"preference=... is required for a PCM run, one of {[', '.join(c) for c in combinations(dims)]}"
        )
    preference = parse_preference(cfg.preference, dims)
    print(f"preference: {', '.join(preference)}", file=sys.stderr)
    messages = ([{"role": "system", "content": cfg.system}] if cfg.system else []) + [
        {"role": "user", "content": cfg.prompt}
    ]
    items = [(messages, preference)] * cfg.num_return_sequences
    settings = settings_of(cfg, [])
    out = MixtureSampler(mixer, tokenizer).generate(
        [messages] * cfg.num_return_sequences,
        settings,
        controller_weights(controller, tokenizer, items, dims),
    )
    return [c.text for c in out]


def conditioned_prompt(cfg: GenerateConfig, tokenizer, messages: list[dict]) -> tuple[str | list, list[str]]:
    """A SteerLM run's prompt carries the attribute label it was trained with; other runs take the chat as is."""
    from steerable.methods.base import FINAL_MODEL_DIR
    from steerable.methods.steerlm.attributes import steered_prompt
    from steerable.methods.steerlm.stages import load_schema

    schema = None
    if cfg.run is not None:
        try:
            schema = load_schema(Path(cfg.run) / FINAL_MODEL_DIR)
        except ConfigError:
            schema = None
    if schema is None:
        if cfg.attributes:
            raise ConfigError(
                f"attributes.{next(iter(cfg.attributes))}: run={cfg.run} is not attribute-conditioned "
                "(attributes need a method=steerlm run)"
            )
        return messages, []
    values = schema.resolve(cfg.attributes, where="attributes")
    print(f"attribute label: {schema.label(values)}", file=sys.stderr)  # what the model is conditioned on
    return steered_prompt(tokenizer, messages, schema, values), [schema.label_start]


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
    key, _, value = arg.partition("=")
    if key != "preference" or value[:1] in ("'", '"'):
        return arg
    return f"{key}='{value}'"


def main() -> None:
    setup_hydra()
    # Attribute names come from the checkpoint, not the config, so `attributes.humor=4` is accepted without '+'.
    sys.argv = [f"+{a}" if a.startswith("attributes.") else a for a in sys.argv]
    # `preference="concise, friendly"` reaches us unquoted; a comma would otherwise read as a sweep or a list.
    sys.argv = [quoted_preference(a) for a in sys.argv]
    check_run_argument(sys.argv[1:], required=False, example="")
    check_composition("generate", sys.argv[1:])
    _main()


if __name__ == "__main__":
    main()
