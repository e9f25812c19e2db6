"""`steerable-generate`: sample from a model, or from a trained run folder, with one prompt."""

from __future__ import annotations

import logging
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
    settings = GenerationSettings(
        max_new_tokens=cfg.max_new_tokens,
        do_sample=cfg.do_sample,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=cfg.top_k,
        stop=list(cfg.stop),
        num_return_sequences=cfg.num_return_sequences,
        seed=cfg.seed,
    )
    completions = HFSampler(model, tokenizer).generate([messages], settings)
    return [c.text for c in completions]


@hydra.main(config_path=CONF_DIR, config_name="generate", version_base="1.3")
def _main(dict_cfg: DictConfig) -> None:
    cfg: GenerateConfig = validate(dict_cfg)
    for i, text in enumerate(generate(cfg)):
        if cfg.num_return_sequences > 1:
            print(f"--- sample {i + 1}")
        print(text)


def main() -> None:
    setup_hydra()
    _main()


if __name__ == "__main__":
    main()
