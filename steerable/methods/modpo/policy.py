"""A MODPO policy: a plain (control-free) policy that knows the weighting it was trained for, so a sweep of
runs over w is a set of fixed policies the benchmark can show as one front."""

from __future__ import annotations

from pathlib import Path

from steerable.policies.plain import PlainPolicy, run_network
from steerable.policies.runs import saved_config


class FixedWeightsPolicy(PlainPolicy):
    """No controls; `fixed_weights` = objective name -> weight of the run."""

    def __init__(self, *args, fixed_weights: dict[str, float], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fixed_weights = dict(fixed_weights)

    def describe(self, values: dict) -> str:
        return f"trained for weights {self.fixed_weights}"


def run_weights(run_dir: Path) -> dict[str, float]:
    """The weighting a MODPO run was trained for, resolved from its saved config as the run resolved it."""
    from steerable.methods.modpo.config import objective_weights

    return objective_weights(saved_config(Path(run_dir)))


def load_fixed_weights_policy(run_dir: Path) -> FixedWeightsPolicy:
    return FixedWeightsPolicy(run_network(run_dir), fixed_weights=run_weights(run_dir))
