"""A RiC policy at inference: one weighting of the objectives, mapped to the rewards to request (the paper's
mapping, or the run's `method.mapping`) and written into the prompt as the model was trained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steerable.config.schema import ConfigError
from steerable.generation import Completion, GenerationSettings
from steerable.generation.hf import render_prompt
from steerable.methods.ric.scores import MAPPINGS, ScoreScale, rewards_for_preference
from steerable.policies.base import Control, Network, SteerablePolicy, weights_control
from steerable.policies.plain import run_network
from steerable.policies.runs import final_metadata
from steerable.run_dir import RunDirError

WEIGHTS = "weights"
META_KEY = "ric"


class RiCPolicy(SteerablePolicy):
    """`weights`: one value per objective in the run's order, on the simplex; uniform when not given."""

    def __init__(self, network: Network, scale: ScoreScale, mapping: str) -> None:
        super().__init__(network)
        self.scale, self.mapping = scale, mapping

    @property
    def objectives(self) -> list[str]:
        return list(self.scale.names)

    def controls(self) -> list[Control]:
        return [
            weights_control(
                self.objectives, "how much each objective counts; mapped to the rewards the prompt asks for"
            )
        ]

    def requested(self, values: dict[str, Any]) -> list[float]:
        """The normalised rewards the prompt asks for under `values`."""
        s = self.scale
        return rewards_for_preference(values[WEIGHTS], s.low, s.high, self.mapping, s.decimals)

    def describe(self, values: dict[str, Any]) -> str:
        weights = dict(zip(self.objectives, values[WEIGHTS], strict=True))
        return f"weights {weights} -> requested rewards {self.scale.text(self.requested(values))}"

    def plain_prompt(self, messages: list[dict], values: dict[str, Any]) -> str:
        return render_prompt(self.tokenizer, self.scale.prompted(messages, self.requested(values)))

    def _generate(
        self, prompts: list[list[dict]], values: dict[str, Any], settings: GenerationSettings
    ) -> list[Completion]:
        wanted = self.requested(values)
        shown = [self.scale.prompted(p, wanted) for p in prompts]
        return self.sampler().generate(shown, settings)


def load_ric_policy(run_dir: Path) -> RiCPolicy:
    """The conditioned policy of a RiC run (its checkpoints/final) with the score scale it was trained on."""
    meta = final_metadata(run_dir).get(META_KEY)
    if not meta:
        raise ConfigError(f"run={run_dir} is not a RiC run: no score scale in its checkpoints/final")
    if not isinstance(meta, dict):
        raise RunDirError(f"run={run_dir}: checkpoints/final's RiC metadata must be a mapping")
    try:
        scale = ScoreScale.from_dict(meta.get("scale"))
    except ValueError as err:
        raise RunDirError(f"run={run_dir}: checkpoints/final's RiC metadata: {err}") from None
    if meta.get("mapping") not in MAPPINGS:
        raise RunDirError(
            f"run={run_dir}: checkpoints/final's RiC mapping must be one of {MAPPINGS}, got {meta.get('mapping')!r}"
        )
    return RiCPolicy(run_network(run_dir), scale, meta["mapping"])
