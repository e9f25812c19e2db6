"""OnlineModule.hold_frozen: a model the loop reads but never trains (SuperHF's full fine-tuning reference,
PCM's experts) is a real submodule, so Lightning moves it with the policy, yet it is never trained, never in
train mode, and never in the optimizer or a checkpoint."""

from __future__ import annotations

import torch

from steerable.backbone.adapters import frozen_reference, wrap_lora
from steerable.backbone.loading import load_base_model, load_tokenizer
from steerable.config.schema import HardwareConfig, LoggerConfig, TrainerConfig
from steerable.training.lm_module import OptimSettings
from steerable.training.online import OnlineModule
from steerable.training.trainer import LAST_CHECKPOINT, RunRecord, build_trainer
from tests.test_backbone import tiny_config


class WithReference(OnlineModule):
    """SFT steps (CausalLMModule's) on a policy that also holds a frozen full copy and records its mode."""

    def __init__(self, policy: torch.nn.Module, reference: torch.nn.Module) -> None:
        super().__init__(policy, OptimSettings(lr=1e-2, total_steps=2))
        self.hold_frozen("reference", reference)
        self.modes: list[tuple[bool, bool]] = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.modes.append((self.model.training, self.reference.training))
        self.reference.requires_grad_(
            True
        )  # as PEFT's set_adapter does to PCM's experts (the mixer calls it)
        return super().training_step(batch, batch_idx)


def batches() -> list[dict[str, torch.Tensor]]:
    ids = torch.randint(3, 200, (4, 12), generator=torch.Generator().manual_seed(0))
    return [{"input_ids": ids[i : i + 2], "attention_mask": torch.ones_like(ids[i : i + 2]), "labels": ids[i : i + 2]}
            for i in (0, 2)]  # fmt: skip


def test_a_held_frozen_model_is_moved_but_never_trained_optimised_or_checkpointed(tmp_path) -> None:
    cfg = tiny_config()
    tokenizer = load_tokenizer(cfg)
    reference = load_base_model(cfg, tokenizer)
    policy = wrap_lora(frozen_reference(reference), cfg.lora)
    policy.requires_grad_(False)
    for name, p in policy.named_parameters():
        p.requires_grad_("lora_" in name)
    reference.train().requires_grad_(True)  # whatever state it arrives in
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    module = WithReference(policy, reference)
    assert not any(p.requires_grad for p in reference.parameters())
    assert not any(k.startswith("reference.") for k in module.state_dict())
    assert any(k.startswith("model.") for k in module.state_dict())

    trainer = build_trainer(
        TrainerConfig(max_steps=2, checkpoint_every_n_steps=1),
        HardwareConfig(name="cpu"),
        RunRecord(LoggerConfig(name="none", csv=False), tmp_path, "frozen", {}),
    )
    trainer.fit(module, torch.utils.data.DataLoader(batches(), batch_size=None))
    assert module.modes == [(True, False), (True, False)]  # Lightning's train() left the reference in eval
    assert all(torch.equal(v, before[k]) for k, v in reference.state_dict().items())
    assert module.trainable_names() == {f"model.{n}" for n, p in policy.named_parameters() if p.requires_grad}
    optimised = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimised == {id(p) for p in policy.parameters() if p.requires_grad}
    assert not optimised & {id(p) for p in reference.parameters()}
    saved = torch.load(tmp_path / LAST_CHECKPOINT, weights_only=False)["state_dict"]
    assert saved and all(k.startswith("model.") and "lora_" in k for k in saved)

    module.train()  # anyone switching the whole module to train mode leaves the reference in eval (no dropout)
    assert policy.training and not reference.training
    module.to(torch.float64)  # what Lightning's device and precision moves do: the reference goes along
    assert next(reference.parameters()).dtype == torch.float64
