"""`steerable-generate`: sample from a model, or from a trained run folder, with one prompt."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from steerable.cli.common import CONF_DIR, set_threads, setup_hydra, validate
from steerable.config.schema import ConfigError, GenerateConfig

log = logging.getLogger("steerable")


def generate(cfg: GenerateConfig) -> list[str]:
    from steerable.backbone import load_backbone
    from steerable.generation import GenerationSettings, HFSampler
    from steerable.methods.base import load_policy

    set_threads(cfg.hardware.torch_threads)
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
    settings = GenerationSettings(
        max_new_tokens=cfg.max_new_tokens,
        do_sample=cfg.do_sample,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=cfg.top_k,
        stop=list(cfg.stop) + stop,
        num_return_sequences=cfg.num_return_sequences,
        seed=cfg.seed,
    )
    completions = HFSampler(model, tokenizer).generate([prompt], settings)
    return [c.text for c in completions]


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
def _main(dict_cfg: DictConfig) -> None:
    cfg: GenerateConfig = validate(dict_cfg)
    for i, text in enumerate(generate(cfg)):
        if cfg.num_return_sequences > 1:
            print(f"--- sample {i + 1}")
        print(text)


def main() -> None:
    setup_hydra()
    # Attribute names come from the checkpoint, not the config, so `attributes.humor=4` is accepted without '+'.
    sys.argv = [f"+{a}" if a.startswith("attributes.") else a for a in sys.argv]
    _main()


if __name__ == "__main__":
    main()
