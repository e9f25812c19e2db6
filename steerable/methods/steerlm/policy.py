"""A SteerLM policy at inference: one numeric dial per attribute of its schema, written as the label prefix it
was trained with after the assistant header; generation stops before the model starts a new label."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from steerable.config.schema import ConfigError
from steerable.generation import Completion, GenerationSettings
from steerable.methods.steerlm.attributes import AttributeSchema, steered_prompt
from steerable.policies.base import Control, Network, Request, SteerablePolicy
from steerable.policies.plain import run_network
from steerable.policies.runs import FINAL_MODEL_DIR, METADATA_FILE

SCHEMA_KEY = "attributes"  # where the schema sits in checkpoints/final/steerable.json
GROUP = "attributes"  # control names: attributes.<name>


def load_schema(policy_dir: Path) -> AttributeSchema:
    """The attribute schema saved with an attribute-conditioned policy (a checkpoints/final folder)."""
    meta_file = Path(policy_dir) / METADATA_FILE
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    if SCHEMA_KEY not in meta:
        raise ConfigError(
            f"{policy_dir} is not an attribute-conditioned (SteerLM) policy: no attribute schema"
        )
    return AttributeSchema.from_dict(meta[SCHEMA_KEY])


class SteerLMPolicy(SteerablePolicy):
    def __init__(self, network: Network, schema: AttributeSchema) -> None:
        super().__init__(network)
        self.schema = schema

    def controls(self) -> list[Control]:
        low, high = self.schema.value_range
        return [
            Control(
                f"{GROUP}.{name}",
                "number",
                doc=f"requested {name}, written into the label the model was trained on",
                default=self.schema.defaults.get(name),
                low=low,
                high=high,
                step=1,
            )
            for name in self.schema.names
        ]

    def controls_for(self, request: Request) -> dict[str, Any]:
        """Each attribute an objective follows is set in proportion to that objective's weight: weight w puts
        the dial at low + w·(high - low), or at high - w·(high - low) for an objective that wants less of the
        attribute (direction -1). Attributes no objective names keep their defaults."""
        low, high = self.schema.value_range
        dials = {}
        for name, objective in request.objectives.items():
            if objective.attribute in self.schema.names:
                share = request.weight(name) if objective.direction > 0 else 1 - request.weight(name)
                dials[f"{GROUP}.{objective.attribute}"] = round(low + share * (high - low))
        if not dials:
            raise ConfigError(
                f"{self.origin}: no objective of the request {sorted(request.weights)} follows an attribute "
                f"of this SteerLM policy {list(self.schema.names)} (benchmark.objectives.<name>.attribute)"
            )
        return dials

    def values(self, resolved: dict[str, Any]) -> dict[str, int]:
        """Controls -> the schema's attribute values, in label order."""
        return {name: int(resolved[f"{GROUP}.{name}"]) for name in self.schema.names}

    def describe(self, values: dict[str, Any]) -> str:
        return f"attribute label: {self.schema.label(self.values(values))}"

    def plain_prompt(self, messages: list[dict], values: dict[str, Any]) -> str:
        return steered_prompt(self.tokenizer, messages, self.schema, self.values(values))

    def _generate(
        self, prompts: list[list[dict]], values: dict[str, Any], settings: GenerationSettings
    ) -> list[Completion]:
        wanted = self.values(values)
        texts = [steered_prompt(self.tokenizer, p, self.schema, wanted) for p in prompts]
        stop = [*settings.stop, self.schema.label_start]
        return self.sampler().generate(texts, replace(settings, stop=stop))


def load_steerlm_policy(run_dir: Path) -> SteerLMPolicy:
    """The newest attribute-conditioned policy of a SteerLM run (its checkpoints/final) with its schema."""
    network = run_network(run_dir)
    return SteerLMPolicy(network, load_schema(Path(run_dir) / FINAL_MODEL_DIR))
