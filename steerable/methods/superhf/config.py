"""The `method.*` keys of superhf: the schema Hydra validates its conf/method option against."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerable.config.base import ConfigError, choice_enum
from steerable.config.method import RecipeConfig
from steerable.config.sampling import SamplingConfig

SUPERHF_REWARD_REQUIRED = (
    "method.reward is required: a reward model run folder (method=reward_model) or a reward "
    "source key, e.g. reward=[positivity] method.reward=positivity"
)


# ref_to_policy: KL(ref || policy), as the paper's code computes it | policy_to_ref: KL(policy || ref)
KLDirection = choice_enum("KLDirection", ["ref_to_policy", "policy_to_ref"])
# sum: per-example KLs summed over the minibatch (the code) | mean
KLAggregation = choice_enum("KLAggregation", ["sum", "mean"])
# labels: the code's unshifted label positions | targets: the positions that predict them
KLPositions = choice_enum("KLPositions", ["labels", "targets"])


@dataclass
class SuperHFConfig(RecipeConfig):
    """SuperHF (Mukobi et al. 2023): per superbatch, sample `completions_per_prompt` replies to each of
    `prompt_accumulation` prompts from the current policy, keep the best `top_k` per prompt under the train
    reward, then take supervised steps on them plus kl_coef * KL to the adapter-disabled starting model.

    Defaults follow the paper's main config (configs/default.yaml) except `num_prompts` (10,000 there) and
    `warmup_steps` (32 superbatches there), sized so a CPU run finishes. `lr` is per optimizer step; the
    scheduler (warmup_steps, total) counts superbatches, as in the paper's code. A run is one pass over its
    prompts, at most `trainer.max_steps` superbatches (the first max_steps x prompt_accumulation prompts)."""

    name: str = "superhf"
    lr: float = 2e-5
    warmup_steps: int = 4  # superbatches (32 in the paper's 5,000-superbatch runs)
    batch_size: int = 2  # kept completions per optimizer step (the paper's minibatch_size_finetuning)
    reward: str | None = None  # train reward: a reward/attribute model run folder, or a key of `reward`
    gold_reward: str | None = None  # held-out judge, trained on the other half of the pairs (same forms)
    reward_output: str | None = None  # which output of a multi-output reward source (null = the first)
    num_prompts: int = 200  # 100 superbatches, trainer.max_steps' default
    prompt_accumulation: int = 2  # prompts per superbatch
    completions_per_prompt: int = 16  # n, the paper's "superbatch_size"
    top_k: int = 1  # kept per prompt (not top-k sampling: that is sampling.top_k)
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(max_new_tokens=64, do_sample=True, top_p=0.95)
    )
    generation_batch_size: int = 32  # sampled rows per generate call (prompts x completions)
    kl_coef: float = 0.35  # negative = no KL term and no reference forward (the paper's -1)
    kl_direction: KLDirection = KLDirection["ref_to_policy"]
    kl_aggregation: KLAggregation = KLAggregation["sum"]
    kl_positions: KLPositions = KLPositions["labels"]
    kl_clamp: bool = True  # max(kl_i, 0) per example, as the code does against bf16 noise
    length_penalty: float = 0.0  # score -= c * log(words) (the code's option)
    inverse_loss_penalty: float = 0.0  # loss += c / loss (the code's option)
    trim: bool = True  # cut at the first "\n\n<Name>:", "Human" or "Assistant" (B9.4)
    system_prompt: str | None = (
        "A human user sends a message, and a helpful and harmless AI assistant responds."
    )
    first_turn_only: bool = True  # HH prompts: the first human turn only, as the paper does
    eval_every: int = 8  # superbatches between gold-reward measurements on the fixed eval prompts
    eval_prompts: int = 16
    eval_samples: int = 1  # seeded samples per fixed eval prompt for the progress curve (more = less noise)
    best_of_n: int = 16  # n of the best-of-n baseline in the eval stage
    baselines: list[str] = field(default_factory=list)  # other policy run folders to compare (e.g. FeedME)

    def __post_init__(self) -> None:
        super().__post_init__()
        positive = {
            "num_prompts": self.num_prompts,
            "prompt_accumulation": self.prompt_accumulation,
            "completions_per_prompt": self.completions_per_prompt,
            "top_k": self.top_k,
            "generation_batch_size": self.generation_batch_size,
            "eval_every": self.eval_every,
            "eval_prompts": self.eval_prompts,
            "eval_samples": self.eval_samples,
            "best_of_n": self.best_of_n,
        }
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"method.{key} must be at least 1, got {value}")
        if self.top_k > self.completions_per_prompt:
            raise ConfigError(
                f"method.top_k={self.top_k} keeps more than method.completions_per_prompt="
                f"{self.completions_per_prompt} samples"
            )


def check(cfg: Any) -> None:
    """The train and gold rewards must exist before any model loads."""
    if "train" not in cfg.method.stages:
        return
    if not cfg.method.reward:
        raise ConfigError(SUPERHF_REWARD_REQUIRED)
    for key in ("reward", "gold_reward"):
        value = getattr(cfg.method, key)
        if value and value not in cfg.reward and not Path(value).is_dir():
            raise ConfigError(
                f"method.{key}={value} is neither a source in reward= ({sorted(cfg.reward)}) "
                "nor an existing run folder"
            )
