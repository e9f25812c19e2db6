"""SteerLM 2.0's LightningModule: the teacher-forced module with the importance-weighted loss (`loss.py`) over
groups of n replies to one (prompt, requested attributes)."""

from __future__ import annotations

from typing import Any

import torch

from steerable.generation.logprobs import pack_completions, sequence_logprobs
from steerable.methods.steerlm.loss import steerlm2_loss
from steerable.training.lm_module import CausalLMModule


class SteerLM2Module(CausalLMModule):
    """A batch is a list of groups: every reply to one (prompt, attributes) sits in the same batch."""

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Summed over groups (the spec's loss is a mean over (prompt, attributes) groups)."""
        groups, n = batch["weights"].shape
        logp = sequence_logprobs(
            self.model, batch["input_ids"], batch["attention_mask"], batch["response_mask"]
        )
        sequence = logp.sum(dim=1).view(groups, n)
        tokens = batch["response_mask"].sum(dim=1).view(groups, n)
        loss, distance = steerlm2_loss(sequence, tokens, batch["log_sampler"], batch["weights"])
        count = torch.tensor(groups, device=loss.device)
        return loss * count, count, {"distance": distance.detach()}


def collate_groups(pad_id: int):
    def collate(groups: list[dict]) -> dict[str, torch.Tensor]:
        completions = [c for g in groups for c in g["completions"]]
        ids, mask, response = pack_completions(completions, pad_id)
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "response_mask": response,
            "weights": torch.stack([g["weights"] for g in groups]),
            "log_sampler": torch.stack([g["log_sampler"] for g in groups]),
        }

    return collate
