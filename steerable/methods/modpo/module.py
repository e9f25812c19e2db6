"""The MODPO LightningModule: DPO's reply log-probs and adapter-off reference, MODPO's margin-weighted loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from steerable.methods.dpo.loss import DPOTerms, PairLogprobs
from steerable.methods.dpo.module import pair_logprobs
from steerable.methods.dpo.pairs import PairCollator
from steerable.methods.modpo.loss import modpo_loss
from steerable.methods.modpo.pairs import MarginPair
from steerable.training.lm_module import CausalLMModule, OptimSettings


@dataclass(frozen=True)
class Weighting:
    """w split as the loss uses it: the target's weight and the margin objectives' weights, in margin order."""

    target: str
    target_weight: float
    margin_names: tuple[str, ...]
    margin_weights: tuple[float, ...]

    @classmethod
    def of(cls, weights: dict[str, float], target: str, scored: set[str]) -> Weighting:
        """The margins are the other objectives; each must be a reward source (`scored`)."""
        others = [n for n in weights if n != target]
        missing = [n for n in others if n not in scored]
        if missing:
            raise ValueError(f"margin objectives {missing} have no reward scores in the pairs")
        return cls(target, weights[target], tuple(others), tuple(weights[n] for n in others))


class MarginCollator:
    """DPO's 2B rows (chosen, then rejected) plus `margins` [2B, K-1] in the same row order."""

    def __init__(self, pad_token_id: int) -> None:
        self.pairs = PairCollator(pad_token_id)

    def __call__(self, batch: list[MarginPair]) -> dict[str, torch.Tensor]:
        out = self.pairs([p.tokens for p in batch])
        rows = [p.chosen_margin for p in batch] + [p.rejected_margin for p in batch]
        out["margins"] = torch.tensor(rows, dtype=torch.float32).reshape(len(rows), -1)
        return out


def batch_terms(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], weighting: Weighting, beta: float
) -> DPOTerms:
    policy, reference = pair_logprobs(model, batch, average=False)  # the paper sums token log-probs
    margin_chosen, margin_rejected = batch["margins"].chunk(2)
    return modpo_loss(
        PairLogprobs.of(policy, reference),
        margin_chosen,
        margin_rejected,
        weighting.target_weight,
        torch.tensor(weighting.margin_weights),
        beta,
    )


class MODPOModule(CausalLMModule):
    """Summed MODPO loss over a micro-batch's pairs, normalised by the global pair count (as DPO's)."""

    def __init__(
        self, model: torch.nn.Module, optim: OptimSettings, weighting: Weighting, beta: float, **kwargs: Any
    ):
        super().__init__(model, optim, **kwargs)
        self.weighting, self.beta = weighting, beta

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        terms = batch_terms(self.model, batch, self.weighting, self.beta)
        pairs = torch.tensor(terms.losses.shape[0], device=terms.losses.device)
        return terms.losses.sum(), pairs, terms.metrics()
