"""A run folder is untrusted input: what it says about the model never turns on code from a repository."""

from __future__ import annotations

import logging

from omegaconf import OmegaConf

from steerable.methods.base import run_model_config
from tests.conftest import compose_config


def test_a_run_folder_cannot_turn_on_remote_code(tmp_path, caplog) -> None:
    composed = compose_config("train", ["model=tiny", "model.trust_remote_code=true"])
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(composed, tmp_path / ".hydra" / "config.yaml")
    with caplog.at_level(logging.WARNING):
        model = run_model_config(tmp_path)
    assert model.trust_remote_code is False
    assert "ignored for a loaded folder" in caplog.text
