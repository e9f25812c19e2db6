"""The `method.*` keys of dpo, and which data can feed it: the schema Hydra validates conf/method/dpo.yaml against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from steerable.config.schema import ConfigError, RecipeConfig, at_least, choice_enum

# sigmoid: the DPO paper's loss; ipo: Azar et al. 2023's squared loss, which keeps a finite optimum when
# preferences are deterministic (sigmoid DPO would push the margin to infinity).
LossType = choice_enum("LossType", ["sigmoid", "ipo"])

# Data formats that give preference pairs (see steerable/methods/dpo/pairs.py for how each is read).
PAIR_FORMATS = ("hh-rlhf", "jsonl", "helpsteer2")


@dataclass
class DPOConfig(RecipeConfig):
    """Direct Preference Optimization: the LoRA policy against its own adapter-off reference."""

    name: str = "dpo"
    # LoRA DPO runs sit around 5e-6..5e-5 (the paper's full fine-tuning used 1e-6; LoRA needs ~10x more).
    # SFT's 2e-4 lets the log-ratios run away within a few hundred steps and the samples degrade.
    lr: float = 5e-5
    beta: float = 0.1  # strength of the implicit KL pull to the reference (the paper's 0.1)
    loss_type: LossType = LossType["sigmoid"]
    label_smoothing: float = 0.0  # cDPO: the assumed probability that a pair's label is flipped
    # Mean instead of sum of the reply's token log-probs. null = by loss: the per-token mean for ipo (Azar et
    # al.'s derivation and TRL's IPO both average), the sum for sigmoid (the DPO paper). true/false force it.
    average_logprobs: bool | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least("method.beta", self.beta, 0, strictly=True)
        loss = str(getattr(self.loss_type, "value", self.loss_type))
        if loss not in LossType.__members__:
            raise ConfigError(f"method.loss_type must be one of {list(LossType.__members__)}, got {loss!r}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"method.label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.average_logprobs is None:
            self.average_logprobs = loss == "ipo"
        if self.label_smoothing and loss != "sigmoid":
            raise ConfigError(
                f"method.label_smoothing applies to method.loss_type=sigmoid only, got loss_type={loss}"
            )


def data_format(data: Any) -> str:
    return str(getattr(data.format, "value", data.format))


def check(cfg: Any) -> None:
    """DPO needs preference pairs and a LoRA policy (the reference is the same model, adapter off)."""
    fmt = data_format(cfg.data)
    if fmt not in PAIR_FORMATS:
        raise ConfigError(
            f"method=dpo needs preference pairs; data.format={fmt} has none "
            f"(use data=hh-rlhf, data=helpsteer2 or data=jsonl with chosen/rejected rows)"
        )
    if fmt == "helpsteer2" and cfg.data.attributes and "helpfulness" not in cfg.data.attributes:
        raise ConfigError(
            "method=dpo ranks HelpSteer2 replies by helpfulness; data.attributes "
            f"{list(cfg.data.attributes)} leaves it out"
        )
    if not cfg.model.lora.enabled:
        raise ConfigError(
            "method=dpo uses the adapter-off model as its reference and needs model.lora.enabled=true "
            "(full fine-tuning would need a second frozen copy, which is not supported)"
        )
