"""The LightningModules of the reward model (pairs, Bradley-Terry) and the attribute model (regression): the
shared teacher-forced module with the scoring loss in place of the LM loss."""

from __future__ import annotations

from typing import Any

import torch

from steerable.methods.reward_models.data import MISSING_LABEL
from steerable.methods.reward_models.loss import bradley_terry_loss, masked_mse
from steerable.rewards.scoring_model import ScoringModel
from steerable.training.lm_module import CausalLMModule, OptimSettings


class RewardModelModule(CausalLMModule):
    def __init__(self, model: ScoringModel, optim: OptimSettings, margin: float, **kwargs: Any):
        super().__init__(model, optim, **kwargs)
        self.margin = margin

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Summed over pairs (chosen and rejected rows make one pair)."""
        loss, accuracy = bradley_terry_loss(
            self.model(batch["input_ids"], batch["attention_mask"]), self.margin
        )
        pairs = torch.tensor(batch["input_ids"].shape[0] // 2, device=loss.device)
        return loss * pairs, pairs, {"accuracy": accuracy}


class AttributeModelModule(CausalLMModule):
    def loss_terms(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Summed over labelled (reply, attribute) entries."""
        labelled = (batch["labels"] != MISSING_LABEL).sum()
        mean = masked_mse(self.model(batch["input_ids"], batch["attention_mask"]), batch["labels"])
        return mean * labelled, labelled, {}
