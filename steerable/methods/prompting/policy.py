"""The prompting baseline's policy: the base model, with a request written as a system message from the
objectives' instructions and weights. Its one control is that message (empty = the plain base model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steerable.backbone import load_backbone
from steerable.generation import Completion, GenerationSettings
from steerable.generation.hf import render_prompt
from steerable.methods.prompting.config import PromptingConfig
from steerable.policies.base import Control, Network, Request, SteerablePolicy
from steerable.policies.runs import run_config, run_kind, run_model_config

INSTRUCTION = "instruction"


def instruction_for(request: Request, template: str) -> str:
    """ "goal (NN%); ..." for every objective with weight > 0, heaviest first; an objective without an
    instruction is named by its name."""
    weighted = sorted(request.weights.items(), key=lambda item: -item[1])
    goals = []
    for name, weight in weighted:
        if weight > 0:
            objective = request.objectives.get(name)
            text = objective.instruction if objective and objective.instruction else name
            goals.append(f"{text.rstrip('.')} ({round(100 * weight)}%)")
    return template.format(goals="; ".join(goals))


class PromptingPolicy(SteerablePolicy):
    """`instruction`: a system message placed before the conversation (replacing its own); "" = none."""

    def __init__(self, network: Network, template: str) -> None:
        super().__init__(network)
        self.template = template

    def controls(self) -> list[Control]:
        return [Control(INSTRUCTION, "text", doc="a system message asking for the goals", default="")]

    def controls_for(self, request: Request) -> dict[str, Any]:
        return {INSTRUCTION: instruction_for(request, self.template)}

    def describe(self, values: dict[str, Any]) -> str:
        return f"system: {values[INSTRUCTION]}" if values[INSTRUCTION] else ""

    def instructed(self, messages: list[dict], values: dict[str, Any]) -> list[dict]:
        if not values[INSTRUCTION]:
            return messages
        rest = [m for m in messages if m["role"] != "system"]
        return [{"role": "system", "content": values[INSTRUCTION]}, *rest]

    def plain_prompt(self, messages: list[dict], values: dict[str, Any]) -> str:
        return render_prompt(self.tokenizer, self.instructed(messages, values))

    def _generate(
        self, prompts: list[list[dict]], values: dict[str, Any], settings: GenerationSettings
    ) -> list[Completion]:
        return self.sampler().generate([self.instructed(p, values) for p in prompts], settings)


def load_prompting_policy(run_dir: Path) -> PromptingPolicy:
    """The base model of a prompting run (its saved model config), untouched."""
    model_cfg = run_model_config(run_dir)
    model, tokenizer = load_backbone(model_cfg)
    method = run_config(run_dir, "method", PromptingConfig)
    network = Network(model, tokenizer, f"run={run_dir}", run_kind(run_dir), model_cfg)
    return PromptingPolicy(network, method.template)
