"""Inference on trained runs through one interface (`SteerablePolicy`): what a user may set, and generation
under those settings. Method-specific policies live in their method packages (`methods/<name>/policy.py`);
`steerable.methods.registry.load_policy(run)` picks the right one from the run's declared kind."""

from steerable.policies.base import Control, SteerablePolicy

__all__ = ["Control", "SteerablePolicy"]
