"""What a finished run folder says about itself: its saved config (`.hydra/config.yaml`, read here and nowhere
else), the folder its policy is saved in, and its kind (the method that made it).

A run's kind is declared in `checkpoints/final/steerable.json` (`"kind": "<method>"`, stamped when a stage
saves the policy). Runs made before that, and runs whose policy is not one folder (PCM: experts plus a
controller), take it from the saved config's `method.name`. Nothing guesses a kind from file names or keys.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from steerable.config.sampling import nest_flat_sampling
from steerable.config.schema import ConfigError, ModelConfig
from steerable.run_dir import FINAL_MODEL_DIR, write_text_atomic

METADATA_FILE = "steerable.json"  # written by backbone.adapters.save_model beside the weights
KIND_KEY = "kind"
# a run's own SFT warm start (steerable/methods/warm_start.py), part of its base
WARM_START_DIR = "warm_start"


def saved_config_file(run_dir: Path) -> Path:
    return Path(run_dir) / ".hydra" / "config.yaml"


def saved_config(run_dir: Path) -> DictConfig:
    """The config a run was composed with, as Hydra recorded it."""
    saved = saved_config_file(run_dir)
    if not saved.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (missing .hydra/config.yaml)")
    try:
        config = OmegaConf.load(saved)
    except (yaml.YAMLError, OmegaConfBaseException) as err:
        raise ConfigError(f"{saved} is not a readable config: {' '.join(str(err).split())}") from None
    if not isinstance(config, DictConfig):
        raise ConfigError(f"{saved} is not a config mapping")
    return config


def run_config(run_dir: Path, key: str, schema: type) -> Any:
    """One section of the config a run was trained with (e.g. its model or data), as its dataclass (a run made
    before the sampling keys were nested is read in today's shape). A folder written by another version or by
    hand is untrusted: a key or value this version does not know is one error naming the file and the key."""
    config, saved = saved_config(run_dir), saved_config_file(run_dir)
    if key not in config:
        raise ConfigError(f"{saved} has no `{key}` section")
    try:
        section = nest_flat_sampling(config[key], schema)
        merged = OmegaConf.merge(OmegaConf.structured(schema), section)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        where = f"{key}.{err.full_key}" if getattr(err, "full_key", None) else key
        reason = " ".join(str(err).splitlines()[0].split())
        raise ConfigError(f"{saved}: `{where}` does not fit this version of steerable ({reason})") from None


def run_model_config(run_dir: Path) -> ModelConfig:
    """The model config a run was trained with, so using a run needs no repeated model overrides."""
    from steerable.backbone.loading import untrusted_model_config  # torch: only when a model is used

    return with_warm_start(
        untrusted_model_config(run_config(run_dir, "model", ModelConfig), Path(run_dir)), run_dir
    )


def with_warm_start(model: ModelConfig, run_dir: Path) -> ModelConfig:
    """The base a run's stages and its policy start from: `model`, plus the adapter of the run's warm_start
    stage (folded into the weights on load) once that stage has saved it."""
    adapter = Path(run_dir) / WARM_START_DIR / FINAL_MODEL_DIR
    if not (adapter / "adapter_config.json").is_file() or str(adapter) in model.merge_adapters:
        return model
    return replace(model, merge_adapters=[*model.merge_adapters, str(adapter)])


def final_metadata(run_dir: Path) -> dict[str, Any]:
    """`checkpoints/final/steerable.json` of a run, or {} when the run saved no single policy folder."""
    meta = Path(run_dir) / FINAL_MODEL_DIR / METADATA_FILE
    return json.loads(meta.read_text()) if meta.is_file() else {}


def run_kind(run_dir: Path) -> str:
    """The method that made a run: declared next to its policy, else its saved config's `method.name`."""
    declared = final_metadata(run_dir).get(KIND_KEY)
    if isinstance(declared, str) and declared:
        return declared
    try:
        name = saved_config(run_dir).method.name
    except FileNotFoundError:
        raise ConfigError(f"run={run_dir} is not a run folder (no .hydra/config.yaml inside)") from None
    if not isinstance(name, str) or not name:
        raise ConfigError(f"run={run_dir}: its .hydra/config.yaml names no method.name")
    return name


def declare_kind(run_dir: Path, kind: str) -> None:
    """Stamp the run's kind into its saved policy's metadata (a no-op when there is none or it is there)."""
    meta_file = Path(run_dir) / FINAL_MODEL_DIR / METADATA_FILE
    if not meta_file.is_file():
        return
    meta = json.loads(meta_file.read_text())
    if meta.get(KIND_KEY) != kind:
        write_text_atomic(meta_file, json.dumps({**meta, KIND_KEY: kind}, indent=2, sort_keys=True))


def run_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides a run was started with (Hydra's record; a sweep job's own values included)."""
    saved = Path(run_dir) / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(saved)] if saved.is_file() else []


def run_section(run_dir: Path, key: str) -> Any:
    """One section of a run's saved config as plain containers (None when the run has none)."""
    node = OmegaConf.select(saved_config(run_dir), key, default=None)
    return OmegaConf.to_container(node, resolve=True) if node is not None else None


def stored_parameters(run_dir: Path) -> int:
    """Parameters a run keeps for inference: its policy folder (checkpoints/final) when it has one, else
    (PCM: experts plus a controller) every safetensors file in it except resumable training checkpoints."""
    from safetensors import safe_open

    final = Path(run_dir) / FINAL_MODEL_DIR
    files = (
        list(final.rglob("*.safetensors"))
        if final.is_dir()
        else [
            path
            for path in Path(run_dir).rglob("*.safetensors")
            if not _in_training_checkpoint(path.relative_to(run_dir).parts)
        ]
    )
    total = 0
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                total += math.prod(f.get_slice(key).get_shape())
    return total


def _in_training_checkpoint(parts: tuple[str, ...]) -> bool:
    return any(p == "checkpoints" and parts[i + 1 : i + 2] != ("final",) for i, p in enumerate(parts))


def run_rewards(run_dir: Path, given: Any = None) -> dict[str, Any]:
    """The reward sources to measure a run with, by the one rule every evaluation uses: the run's own
    (`reward.*` of its saved config), with each source given now replacing the run's source of that name."""
    own = run_section(run_dir, "reward") or {}
    return {**own, **dict(given or {})}


def is_run_folder(path: Path) -> bool:
    return saved_config_file(path).is_file()
