"""Methods: each builds its ordered stages from a RunContext."""

from __future__ import annotations

from collections.abc import Callable

from steerable.methods import clp, pcm, scoring, sft, steerlm, superhf
from steerable.methods.base import RunContext
from steerable.pipeline import StageFn

METHODS: dict[str, Callable[[RunContext], dict[str, StageFn]]] = {
    "sft": sft.build_stages,
    "reward_model": scoring.reward_model_stages,
    "attribute_model": scoring.attribute_model_stages,
    "steerlm": steerlm.build_stages,
    "superhf": superhf.build_stages,
    "clp": clp.build_stages,
    "rewarded_soups": clp.build_soup_stages,
    "rl": clp.build_rl_stages,
    "pcm": pcm.build_stages,
}
