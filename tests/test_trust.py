"""A run folder is untrusted input: what it says about the model never turns on code from a repository."""

from __future__ import annotations

import logging

from steerable.methods.base import run_model_config
from tests.conftest import compose_config, save_run_config


def test_a_run_folder_cannot_turn_on_remote_code(tmp_path, caplog) -> None:
    composed = compose_config("train", ["model=tiny", "model.trust_remote_code=true"])
    save_run_config(tmp_path, composed)
    with caplog.at_level(logging.WARNING):
        model = run_model_config(tmp_path)
    assert model.trust_remote_code is False
    assert "ignored for a loaded folder" in caplog.text


def test_stage_paths_are_followed_only_inside_the_run_or_to_named_artifacts(tmp_path) -> None:
    import json

    import pytest

    from steerable.pipeline import Step, run_stages
    from steerable.run_dir import RunDirError

    run = tmp_path / "run"
    (run / "stages").mkdir(parents=True)
    stages = {
        "experts": Step(lambda done: {"path": str(run / "experts")}),
        "next": Step(lambda done: done.require("experts"), requires=("experts",)),
    }
    (run / "stages" / "experts.json").write_text(json.dumps({"path": "/etc"}))
    with pytest.raises(RunDirError, match=r"stages/experts.json path=/etc points outside the run folder"):
        run_stages(run, stages, ["next"])
    assert run_stages(run, stages, ["next"], named={"/etc"})["next"]["path"] == "/etc"  # named in config
    (run / "stages" / "experts.json").write_text(json.dumps({"path": str(run / "experts")}))
    (run / "stages" / "next.json").unlink()
    assert run_stages(run, stages, ["next"])["next"]["path"] == str(run / "experts")


def test_a_broken_adapter_is_an_error_naming_the_file(tmp_path) -> None:
    import pytest

    from steerable.backbone import load_backbone
    from steerable.backbone.adapters import save_model
    from steerable.backbone.loading import ModelLoadError

    model_cfg = compose_config("train", ["model=tiny"]).model
    from omegaconf import OmegaConf

    from steerable.cli.common import validate  # noqa: F401  (keeps the config import path the same)
    from steerable.config.schema import ModelConfig

    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), model_cfg))
    model, tokenizer = load_backbone(cfg)
    save_model(model, tokenizer, tmp_path / "final")
    weights = tmp_path / "final" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(ModelLoadError, match=r"cannot load the adapter .*adapter_model.safetensors"):
        load_backbone(cfg, adapter_dir=tmp_path / "final")


def test_a_run_config_with_an_unknown_key_is_one_error_naming_file_and_key(tmp_path) -> None:
    import pytest

    from steerable.config.schema import ConfigError

    composed = compose_config("train", ["model=tiny"])
    save_run_config(tmp_path, composed)
    saved = tmp_path / ".hydra" / "config.yaml"
    text = saved.read_text()
    saved.write_text(text.replace("model:\n", "model:\n  flux_capacitor: 3\n", 1))
    with pytest.raises(ConfigError, match=r"config.yaml: `model.flux_capacitor` does not fit") as caught:
        run_model_config(tmp_path)
    assert "\n" not in str(caught.value)
    saved.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="is not a readable config"):
        run_model_config(tmp_path)
