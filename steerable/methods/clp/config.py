"""The `method.*` keys of clp: the schema Hydra validates its conf/method option against."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from steerable.config.base import ConfigError, choice_enum
from steerable.config.method import RecipeConfig, WarmStartSettings, chosen_objectives
from steerable.config.sampling import SamplingConfig

# reward: r - alpha * log-ratio | loss: alpha * sum over reply tokens of ½(log-ratio)², a term of the loss
KLIn = choice_enum("KLIn", ["reward", "loss"])
# zscore: frozen statistics from reference samples (calibrate stage) | none: raw rewards
Normalize = choice_enum("Normalize", ["zscore", "none"])
# Where w conditions the policy (m LoRA copies mixed as sum_i w_i B_i A_i x): full = every LoRA target | attn = the
# attention projections (the MLP LoRA is shared) | logit = a LoRA on the output layer | prompt = w written into the
# prompt of one shared LoRA (steerable/methods/clp/conditioning.py)
Variant = choice_enum("Variant", ["full", "attn", "logit", "prompt"])
# none: the advantage of the weighted reward w·r, as the paper | per_objective: each objective's advantage divided
# by its within-prompt spread in the step first, so w alone sets each objective's share of the update
ObjectiveScale = choice_enum("ObjectiveScale", ["none", "per_objective"])
# example: one w per example | batch: one w for the whole batch | mirrored: each prompt twice, at w and at w
# reversed (antithetic; for two objectives w and 1 - w), so a step's rows are 2 x batch_size x samples_per_prompt
WeightsPer = choice_enum("WeightsPer", ["example", "batch", "mirrored"])


@dataclass
class ParetoEvalSettings:
    """The weight grid every arm is evaluated on (the same for all methods), on held-out prompts."""

    grid_step: float = 0.1  # simplex lattice step: m=2 gives w_1 in 0, 0.1, ..., 1
    num_prompts: int = 16
    # temperature-1 samples (the on-policy view of the default training sampling); do_sample=false = greedy,
    # for every arm alike
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(max_new_tokens=48, do_sample=True)
    )
    batch_size: int = 16
    # other clp / rewarded_soups runs, evaluated on the same grid and plotted with this one
    compare: list[str] = field(default_factory=list)
    # each rewarded_soups run also as zero-shot logit mixing of its single-reward policies
    logit_mixing: bool = True


@dataclass
class PolicyGradientConfig(RecipeConfig):
    """What every on-policy RL method here shares: REINFORCE with a leave-one-out baseline over k samples per
    prompt, KL to the adapter-disabled reference, rewards z-scored with statistics frozen from reference samples."""

    lr: float = 1e-4
    batch_size: int = 4  # prompts per step
    samples_per_prompt: int = 4  # k, for the leave-one-out (RLOO) baseline
    kl_coef: float = 0.05  # alpha, the same for every arm
    kl_in: KLIn = KLIn["reward"]
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(max_new_tokens=48, do_sample=True)
    )
    generation_batch_size: int = 32  # sampled rows per generate call
    objectives: list[str] = field(
        default_factory=list
    )  # reward keys in order; empty = every source of `reward`
    normalize: Normalize = Normalize["zscore"]
    objective_scale: ObjectiveScale = ObjectiveScale["none"]
    calibration_prompts: int = 32
    # SFT on the data's replies first (stage warm_start; steps=0: start from model.* as it is)
    warm_start: WarmStartSettings = field(default_factory=WarmStartSettings)
    eval: ParetoEvalSettings = field(default_factory=ParetoEvalSettings)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.samples_per_prompt < 2:
            raise ConfigError("method.samples_per_prompt must be at least 2 (leave-one-out baseline)")
        if not 0 < self.eval.grid_step <= 1:
            raise ConfigError(f"method.eval.grid_step must be in (0, 1], got {self.eval.grid_step}")


@dataclass
class CLPConfig(PolicyGradientConfig):
    """CLP: one policy conditioned on reward weightings w sampled on the simplex during multi-objective RL."""

    name: str = "clp"
    variant: Variant = Variant["attn"]
    concentration: float = 1.0  # Dirichlet concentration of w (Dirichlet(1) = uniform on the simplex)
    weights_per: WeightsPer = WeightsPer["example"]
    attention_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    output_module: str = "lm_head"
    # the shared adapter of the attn and logit variants trains at lr x this; 1 = the paper (one learning rate for all).
    # Below 1 the conditioned copies, not the shared trunk, take up what differs between weightings; 0 leaves
    # the shared adapter out (at its zero start it adds nothing), so only the copies train and its gradients are
    # neither computed nor counted in the clipped norm.
    shared_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.concentration <= 0:
            raise ConfigError(f"method.concentration must be positive, got {self.concentration}")
        if self.shared_lr_scale < 0:
            raise ConfigError(f"method.shared_lr_scale must be at least 0, got {self.shared_lr_scale}")


@dataclass
class RLConfig(PolicyGradientConfig):
    """Plain on-policy RL on one reward (or a fixed weighting of several): the RLHF baseline for SuperHF and the
    single-objective endpoint for CLP, with the same trainer. `weights` empty = equal weights."""

    name: str = "rl"
    weights: list[float] = field(default_factory=list)  # a fixed weighting of the objectives; empty = equal


@dataclass
class RewardedSoupsConfig(PolicyGradientConfig):
    """Rewarded Soups: one RL run per reward (same recipe, trainer.max_steps each), LoRA updates interpolated
    with the weights at inference."""

    name: str = "rewarded_soups"


def objective_names(cfg: Any) -> list[str]:
    """The reward keys a multi-objective run optimises, in order (`method.objectives`, else every source)."""
    names = chosen_objectives(cfg)
    if not names:
        raise ConfigError(
            f"method={cfg.method.name} needs a reward source, e.g. reward=[checkpoint] reward.learned.path=<RM>"
        )
    if len(names) < 2 and cfg.method.name != "rl":
        raise ConfigError(
            f"method={cfg.method.name} needs at least two objectives, e.g. reward=[verbosity,positivity]"
        )
    return names


def check(cfg: Any) -> None:
    if {"calibrate", "train"} & set(cfg.method.stages):
        objective_names(cfg)
    variant = getattr(cfg.method, "variant", None)
    if cfg.generation.engine == "vllm" and variant not in (None, "prompt"):
        raise ConfigError(
            f"method.variant={variant} mixes LoRA copies per example while sampling, which only "
            "generation.engine=hf does; use generation.engine=hf or method.variant=prompt"
        )


def check_rl(cfg: Any) -> None:
    check(cfg)
    weights, names = list(cfg.method.weights), objective_names(cfg)
    if weights and (len(weights) != len(names) or min(weights) < 0 or abs(sum(weights) - 1) > 1e-6):
        raise ConfigError(
            f"method.weights={weights} must be {len(names)} non-negative numbers summing to 1 ({names})"
        )
