"""The `method.*` keys of the prompting baseline."""

from __future__ import annotations

from dataclasses import dataclass

from steerable.config.method import MethodConfig


@dataclass
class PromptingConfig(MethodConfig):
    name: str = "prompting"
    # the system message; {goals} becomes "goal (NN%); goal (NN%)" in order of weight
    template: str = "Follow these goals, weighted by how much each matters: {goals}."
