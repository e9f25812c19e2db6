"""Dataclass schemas for every config group.

Hydra composes YAML options on top of these, so a typo in a key or a value of the wrong type fails at
composition with the key's full name. Cross-field rules live in ``__post_init__`` and run when the CLI
calls ``OmegaConf.to_object`` before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from steerable.errors import UserError


class ConfigError(UserError, ValueError):
    """A config value is wrong; the message names the key."""


def at_least(key: str, value: float | None, low: float, strictly: bool = False) -> None:
    """A numeric knob's lower bound (null passes: it means "off" or "default" where allowed)."""
    if value is None:
        return
    if value < low or (strictly and value == low):
        bound = f"greater than {low}" if strictly else f"at least {low}"
        raise ConfigError(f"{key} must be {bound}, got {value}")


# ----------------------------------------------------------------------------------------------- model


def _choices(name: str, values: list[str]) -> type[Enum]:
    """A str Enum whose member names are the exact spellings users type (`bf16-mixed`, `hh-rlhf`).

    OmegaConf validates enum fields by member name, so names must equal the values; a wrong value fails
    at composition with the list of allowed ones.
    """
    return Enum(name, [(v, v) for v in values], type=str)  # type: ignore[return-value]


# hub: hub id or local folder; gguf: a GGUF file (the bundled SmolLM2 by default), converted once and cached;
# tiny: random weights built from `model.tiny` with the project's byte-level tokenizer (tests, smoke runs).
ModelSource = _choices("ModelSource", ["hub", "gguf", "tiny"])


@dataclass
class LoraConfig:
    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    bias: str = "none"

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ConfigError(f"model.lora.r must be positive, got {self.r}")
        at_least("model.lora.alpha", self.alpha, 0, strictly=True)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.lora.dropout must be in [0, 1), got {self.dropout}")
        if self.enabled and not self.target_modules:
            raise ConfigError("model.lora.target_modules is empty while model.lora.enabled=true")


@dataclass
class TinyModelConfig:
    """Shape of a random-weight Llama used by tests and smoke runs."""

    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 128
    max_position_embeddings: int = 1024
    tie_word_embeddings: bool = True
    # Larger than HF's 0.02 so the frozen output layer can express peaked distributions: with 0.02 a
    # LoRA-only model cannot move the logits enough to learn anything beyond a near-uniform distribution.
    initializer_range: float = 0.1
    seed: int = 0  # weights depend only on this, so a saved adapter always meets the same base


@dataclass
class ModelConfig:
    name: str = MISSING
    source: ModelSource = ModelSource["hub"]
    name_or_path: str | None = None
    gguf_file: str | None = None  # file name (or path) of the GGUF weights; null = the bundled SmolLM2 file
    revision: str | None = None
    dtype: str = "float32"  # weights dtype on load: float32 | bfloat16 | float16
    trust_remote_code: bool = False
    attn_implementation: str | None = None
    gradient_checkpointing: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    end_of_turn: str | None = None  # the token that closes an assistant turn; null = tokenizer.eos_token

    def __post_init__(self) -> None:
        if self.source == "hub" and not self.name_or_path:
            raise ConfigError(
                "model.name_or_path is required when model.source=hub (a hub id or a local folder)"
            )
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"model.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")


# ------------------------------------------------------------------------------------------------ data


DataFormat = _choices("DataFormat", ["demo", "jsonl", "oasst1", "hh-rlhf", "helpsteer2", "prompts"])
TooLong = _choices("TooLong", ["truncate", "drop"])


@dataclass
class DataConfig:
    name: str = MISSING
    format: DataFormat = DataFormat["demo"]
    hub_id: str | None = None
    path: str | None = None  # a local copy in the same format as the hub data set; wins over hub_id
    split: str = "train"
    # jsonl only: which fields hold what. `messages` (a chat list) or `prompt` + `response`.
    messages_field: str | None = "messages"
    prompt_field: str = "prompt"
    response_field: str = "response"
    attributes: list[str] = field(default_factory=list)  # attribute names to keep (empty = all found)
    max_records: int | None = None
    val_fraction: float = 0.05
    # Train on one half of the non-held-out records (SuperHF trains its "train" and "gold" reward models on
    # disjoint halves); null = all of them. The held-out split is the same for both halves.
    half: str | None = None
    max_length: int = 512
    too_long: TooLong = TooLong["truncate"]
    num_workers: int = 0
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.format != "demo" and not (self.path or self.hub_id):
            raise ConfigError(f"data={self.name} needs data.path (a local file) or data.hub_id")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.half not in (None, "first", "second"):
            raise ConfigError(f"data.half must be null, first or second, got {self.half!r}")
        if self.max_length < 16:
            raise ConfigError(f"data.max_length must be at least 16, got {self.max_length}")
        at_least("data.num_workers", self.num_workers, 0)
        if self.max_records is not None and self.max_records <= 0:
            raise ConfigError(f"data.max_records must be positive or null, got {self.max_records}")


# -------------------------------------------------------------------------------------------- hardware


Accelerator = _choices("Accelerator", ["cpu", "gpu", "auto"])
# auto: bf16-mixed where the device computes bf16 natively, else 32-true (steerable/hardware.py).
Precision = _choices("Precision", ["auto", "32-true", "bf16-mixed", "bf16-true", "16-mixed"])
Strategy = _choices(
    "Strategy", ["auto", "ddp", "ddp_spawn", "fsdp", "deepspeed_stage_2", "deepspeed_stage_3"]
)


SUPERHF_REWARD_REQUIRED = (
    "method.reward is required: a reward model run folder (method=reward_model) or a reward "
    "source key, e.g. reward=[positivity] method.reward=positivity"
)
DEEPSPEED_NEEDS_GPU = (
    "hardware.strategy={strategy} runs only on CUDA GPUs (Lightning's DeepSpeed strategy refuses the CPU); "
    "on CPU use hardware=ddp or hardware=fsdp with hardware.accelerator=cpu"
)


@dataclass
class HardwareConfig:
    name: str = MISSING
    accelerator: Accelerator = Accelerator["cpu"]
    devices: int = 1
    num_nodes: int = 1
    strategy: Strategy = Strategy["auto"]
    precision: Precision = Precision["auto"]
    torch_threads: int | None = None

    def __post_init__(self) -> None:
        if self.devices < 1 or self.num_nodes < 1:
            raise ConfigError("hardware.devices and hardware.num_nodes must be at least 1")
        at_least("hardware.torch_threads", self.torch_threads, 1)
        if self.accelerator == "cpu" and self.precision == "16-mixed":
            raise ConfigError("hardware.precision=16-mixed needs a GPU; use bf16-mixed on CPU")
        if self.strategy in ("deepspeed_stage_2", "deepspeed_stage_3") and self.accelerator == "cpu":
            raise ConfigError(DEEPSPEED_NEEDS_GPU.format(strategy=self.strategy.value))


# ---------------------------------------------------------------------------------------------- logger


@dataclass
class WandbConfig:
    project: str = "steerable"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    offline: bool = True
    log_model: bool = False


@dataclass
class LoggerConfig:
    """Which loggers a run writes to. CSV (metrics.csv in the run folder) is on unless `none`."""

    name: str = MISSING
    csv: bool = True
    wandb: bool = False
    tensorboard: bool = False
    wandb_settings: WandbConfig = field(default_factory=WandbConfig)

    def __post_init__(self) -> None:
        if self.wandb and self.wandb_settings.offline and self.wandb_settings.log_model:
            raise ConfigError("logger.wandb_settings.log_model cannot be true for an offline W&B run")


# ---------------------------------------------------------------------------------------------- method


@dataclass
class MethodConfig:
    name: str = MISSING
    stages: list[str] = field(default_factory=list)


@dataclass
class RecipeConfig(MethodConfig):
    """Optimisation settings every trained method shares."""

    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    scheduler: str = "cosine"  # constant | linear | cosine
    batch_size: int = 4
    eval_batch_size: int = 8

    def allowed_stages(self) -> list[str]:
        raise NotImplementedError

    def __post_init__(self) -> None:
        allowed = self.allowed_stages()
        bad = [s for s in self.stages if s not in allowed]
        if bad or not self.stages:
            raise ConfigError(
                f"method.stages={list(self.stages)} is not valid for {self.name}; allowed: {allowed}"
            )
        if self.lr <= 0:
            raise ConfigError(f"method.lr must be positive, got {self.lr}")
        if self.scheduler not in ("constant", "linear", "cosine"):
            raise ConfigError(f"method.scheduler must be constant, linear or cosine, got {self.scheduler!r}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError("method.batch_size and method.eval_batch_size must be at least 1")
        at_least("method.weight_decay", self.weight_decay, 0)
        at_least("method.warmup_steps", self.warmup_steps, 0)


@dataclass
class SFTConfig(RecipeConfig):
    name: str = "sft"
    stages: list[str] = field(default_factory=lambda: ["train", "report"])

    def allowed_stages(self) -> list[str]:
        return ["train", "report"]


@dataclass
class ScoringConfig(RecipeConfig):
    """A backbone with a linear head on one pooled hidden state (reward and attribute models)."""

    stages: list[str] = field(default_factory=lambda: ["train", "evaluate"])
    lr: float = 1e-4
    pooling: str = "last"  # last (hidden state of the final token) | mean (masked mean over real tokens)

    def allowed_stages(self) -> list[str]:
        return ["train", "evaluate"]

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pooling not in ("last", "mean"):
            raise ConfigError(f"method.pooling must be last or mean, got {self.pooling!r}")


@dataclass
class RewardModelConfig(ScoringConfig):
    """Bradley–Terry reward model: scalar head, loss -log σ(r_chosen - r_rejected - margin)."""

    name: str = "reward_model"
    margin: float = 0.0  # a constant margin in the loss (0 = plain Bradley–Terry)


@dataclass
class AttributeModelConfig(ScoringConfig):
    """SteerLM's attribute prediction model: one regression output per attribute, -100 labels masked."""

    name: str = "attribute_model"
    attributes: list[str] = field(default_factory=list)  # empty = every attribute found in the data
    value_range: list[float] = field(default_factory=lambda: [0.0, 4.0])

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.value_range) != 2 or self.value_range[0] >= self.value_range[1]:
            raise ConfigError(
                f"method.value_range must be [low, high] with low < high, got {self.value_range}"
            )


STEERLM_STAGES = ["apm", "annotate", "acsft", "baseline", "bootstrap", "steerlm2", "eval"]


@dataclass
class BootstrapConfig:
    """SteerLM step 4: sample for high-quality attribute values, relabel with the APM, fine-tune again."""

    num_prompts: int = (
        64  # training prompts to sample for (null-free: the first N of the shuffled train split)
    )
    samples_per_prompt: int = 2
    top_k: int = 50  # the paper's sampling (Eq. 3)
    temperature: float = 1.0
    max_new_tokens: int = 128
    condition: list[str] = field(default_factory=lambda: ["quality:4"])  # "name:value" items: high quality
    max_steps: int | None = None  # null = trainer.max_steps
    lr: float | None = None  # null = method.lr

    def __post_init__(self) -> None:
        if self.num_prompts < 1 or self.samples_per_prompt < 1:
            raise ConfigError("method.bootstrap.num_prompts and samples_per_prompt must be at least 1")


@dataclass
class SteerLM2Config:
    """SteerLM 2.0 (spec A8): importance-weighted KL fit of the conditioned policy to P(a|x,y)·P(y|x).
    Defaults are the paper's (n=10, temperature 0.7, top-p 0.9, 2 iterations x 2 epochs, constant lr 1e-7)
    except the prompt count (20,000 there)."""

    num_prompts: int = 64
    samples_per_prompt: int = 10
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 128
    condition: list[str] = field(default_factory=lambda: ["quality:4"])  # requested a: high-quality combos
    iterations: int = 2  # resample from the updated policy between iterations
    epochs: int = 2
    lr: float = 1.0e-7
    groups_per_step: int = 2  # (prompt, attributes) groups per optimizer step; a group never splits
    concentration: float = 24.0  # alpha + beta of the Beta read of the attribute model's prediction

    def __post_init__(self) -> None:
        if self.samples_per_prompt < 2:
            raise ConfigError(
                f"method.steerlm2.samples_per_prompt must be at least 2 (weights are normalised within a "
                f"group), got {self.samples_per_prompt}"
            )
        for key in ("num_prompts", "iterations", "epochs", "groups_per_step", "max_new_tokens"):
            if getattr(self, key) < 1:
                raise ConfigError(f"method.steerlm2.{key} must be at least 1, got {getattr(self, key)}")
        if self.lr <= 0 or self.concentration <= 0:
            raise ConfigError("method.steerlm2.lr and method.steerlm2.concentration must be positive")


@dataclass
class SteerEvalSettings:
    """The steerability sweep: each attribute's dial over its range on held-out prompts."""

    attributes: list[str] = field(default_factory=list)  # empty = every attribute of the schema
    values: list[int] = field(default_factory=list)  # empty = every integer of value_range
    num_prompts: int = 16
    max_new_tokens: int = 128
    batch_size: int = 16
    samples_per_value: int = 3  # dial samples per value shown in the report


@dataclass
class SteerLMConfig(RecipeConfig):
    """SteerLM: attribute model -> annotation -> attribute-conditioned SFT -> bootstrapping -> steered eval.

    `lr`, `batch_size`, ... and trainer.max_steps are the attribute-conditioned SFT recipe (and its unlabelled
    baseline); the APM and bootstrap rounds have their own keys."""

    name: str = "steerlm"
    stages: list[str] = field(default_factory=lambda: ["apm", "annotate", "acsft", "baseline", "eval"])
    preset: str = "auto"  # auto (by data set) | oasst | helpsteer | steerlm | demo | custom (= `attributes`)
    attributes: list[str] = field(default_factory=list)  # explicit names in label order; wins over preset
    value_range: list[int] = field(default_factory=lambda: [0, 4])
    label_start: str = "<extra_id_2>"  # NeMo's marker before the label string, written as plain text
    labels: str = "apm"  # apm (annotate with the attribute model, the paper) | human (the data's own labels)
    # "name:value" items for attributes a user leaves out (default: the good end, else the commonest value)
    inference_defaults: list[str] = field(default_factory=list)
    # Existing artifacts to reuse instead of running the stage that makes them:
    apm: str | None = None  # an attribute_model run (or its checkpoints/final)
    annotated: str | None = None  # an `annotate` folder of an earlier steerlm run
    policy: str | None = None  # an earlier steerlm run whose conditioned policy to bootstrap/evaluate
    apm_lr: float = 1.0e-4
    apm_steps: int | None = None  # null = trainer.max_steps
    apm_batch_size: int = 4
    apm_pooling: str = "last"
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    steerlm2: SteerLM2Config = field(default_factory=SteerLM2Config)
    eval: SteerEvalSettings = field(default_factory=SteerEvalSettings)

    def allowed_stages(self) -> list[str]:
        return list(STEERLM_STAGES)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.preset not in ("auto", "oasst", "helpsteer", "steerlm", "demo", "custom"):
            raise ConfigError(
                f"method.preset must be auto, oasst, helpsteer, steerlm, demo or custom, got {self.preset!r}"
            )
        if self.preset == "custom" and not self.attributes:
            raise ConfigError("method.preset=custom needs method.attributes=[name, ...]")
        if len(set(self.attributes)) != len(self.attributes):
            raise ConfigError(f"method.attributes has duplicates: {list(self.attributes)}")
        if len(self.value_range) != 2 or self.value_range[0] >= self.value_range[1]:
            raise ConfigError(
                f"method.value_range must be [low, high] with low < high, got {self.value_range}"
            )
        if self.labels not in ("apm", "human"):
            raise ConfigError(f"method.labels must be apm or human, got {self.labels!r}")
        if not self.label_start.strip():
            raise ConfigError("method.label_start must be a non-blank marker string")
        if self.apm_pooling not in ("last", "mean"):
            raise ConfigError(f"method.apm_pooling must be last or mean, got {self.apm_pooling!r}")


SUPERHF_KL_DIRECTIONS = ("ref_to_policy", "policy_to_ref")


@dataclass
class SuperHFConfig(RecipeConfig):
    """SuperHF (Mukobi et al. 2023): per superbatch, sample `completions_per_prompt` replies to each of
    `prompt_accumulation` prompts from the current policy, keep the best `top_k` per prompt under the train
    reward, then take supervised steps on them plus kl_coef * KL to the adapter-disabled starting model.

    Defaults follow the paper's main config (configs/default.yaml) except `num_prompts` (10,000 there) and
    `warmup_steps` (32 superbatches there), sized so a CPU run finishes. `lr` is per optimizer step; the
    scheduler (warmup_steps, total) counts superbatches, as in the paper's code."""

    name: str = "superhf"
    stages: list[str] = field(default_factory=lambda: ["train", "eval"])
    lr: float = 2e-5
    warmup_steps: int = 4
    batch_size: int = 2  # kept completions per optimizer step (the paper's minibatch_size_finetuning)
    reward: str | None = None  # train reward: a reward/attribute model run folder, or a key of `reward`
    gold_reward: str | None = None  # held-out judge, trained on the other half of the pairs (same forms)
    reward_output: str | None = None  # which output of a multi-output reward source (null = the first)
    num_prompts: int = 256
    prompt_accumulation: int = 2  # prompts per superbatch
    completions_per_prompt: int = 16  # n, the paper's "superbatch_size"
    top_k: int = 1  # kept per prompt
    temperature: float = 1.0
    top_p: float = 0.95
    max_new_tokens: int = 64
    generation_batch_size: int = 32  # sampled rows per generate call (prompts x completions)
    kl_coef: float = 0.35  # negative = no KL term and no reference forward (the paper's -1)
    kl_direction: str = "ref_to_policy"  # KL(ref || policy), the paper's code | policy_to_ref
    kl_aggregation: str = "sum"  # sum over the minibatch's examples (the code) | mean
    kl_positions: str = (
        "labels"  # labels: the code's unshifted label positions | targets: those predicting them
    )
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

    def allowed_stages(self) -> list[str]:
        return ["train", "eval"]

    def __post_init__(self) -> None:
        super().__post_init__()
        positive = {
            "num_prompts": self.num_prompts,
            "prompt_accumulation": self.prompt_accumulation,
            "completions_per_prompt": self.completions_per_prompt,
            "top_k": self.top_k,
            "max_new_tokens": self.max_new_tokens,
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
        if self.kl_direction not in SUPERHF_KL_DIRECTIONS:
            raise ConfigError(f"method.kl_direction must be one of {SUPERHF_KL_DIRECTIONS}")
        if self.kl_aggregation not in ("sum", "mean"):
            raise ConfigError(f"method.kl_aggregation must be sum or mean, got {self.kl_aggregation!r}")
        if self.kl_positions not in ("labels", "targets"):
            raise ConfigError(f"method.kl_positions must be labels or targets, got {self.kl_positions!r}")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ConfigError("method.temperature must be positive and method.top_p in (0, 1]")


@dataclass
class ParetoEvalSettings:
    """The weight grid every arm is evaluated on (the same for all methods), on held-out prompts."""

    grid_step: float = 0.1  # simplex lattice step: m=2 gives w_1 in 0, 0.1, ..., 1
    num_prompts: int = 16
    max_new_tokens: int = 48
    do_sample: bool = True  # temperature-1 samples (the on-policy view); false = greedy, for every arm alike
    batch_size: int = 16
    compare: list[str] = field(default_factory=list)  # other CLP / rewarded_soups runs to plot with this one
    logit_mixing: bool = (
        True  # for each rewarded_soups run, also its single-reward policies mixed in logit space
    )


@dataclass
class PolicyGradientConfig(RecipeConfig):
    """What every on-policy RL method here shares: REINFORCE with a leave-one-out baseline over k samples per
    prompt, KL to the adapter-disabled reference, rewards z-scored with statistics frozen from reference samples."""

    lr: float = 1e-4
    batch_size: int = 4  # prompts per step
    samples_per_prompt: int = 4  # k (RLOO)
    kl_coef: float = 0.05  # alpha, the same for every arm
    kl_in: str = "reward"  # reward: r - alpha * log-ratio | loss: a separate loss term
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 48
    generation_batch_size: int = 32  # sampled rows per generate call
    objectives: list[str] = field(
        default_factory=list
    )  # reward keys in order; empty = every source of `reward`
    normalize: str = "zscore"  # zscore (frozen, from reference samples) | none
    calibration_prompts: int = 32
    eval: ParetoEvalSettings = field(default_factory=ParetoEvalSettings)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.samples_per_prompt < 2:
            raise ConfigError("method.samples_per_prompt must be at least 2 (leave-one-out baseline)")
        if self.kl_in not in ("reward", "loss"):
            raise ConfigError(f"method.kl_in must be reward or loss, got {self.kl_in!r}")
        if self.normalize not in ("zscore", "none"):
            raise ConfigError(f"method.normalize must be zscore or none, got {self.normalize!r}")
        if not 0 < self.eval.grid_step <= 1:
            raise ConfigError(f"method.eval.grid_step must be in (0, 1], got {self.eval.grid_step}")


@dataclass
class CLPConfig(PolicyGradientConfig):
    """CLP: one policy conditioned on reward weightings w sampled on the simplex during multi-objective RL."""

    name: str = "clp"
    stages: list[str] = field(default_factory=lambda: ["calibrate", "train", "eval"])
    variant: str = "attn"  # full | attn | logit | prompt
    concentration: float = 1.0  # Dirichlet concentration of w (1 = uniform on the simplex)
    weights_per: str = "example"  # example | batch (one w for the whole batch)
    attention_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    output_module: str = "lm_head"

    def allowed_stages(self) -> list[str]:
        return ["calibrate", "train", "eval"]

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.variant not in ("full", "attn", "logit", "prompt"):
            raise ConfigError(f"method.variant must be full, attn, logit or prompt, got {self.variant!r}")
        if self.weights_per not in ("example", "batch"):
            raise ConfigError(f"method.weights_per must be example or batch, got {self.weights_per!r}")
        if self.concentration <= 0:
            raise ConfigError(f"method.concentration must be positive, got {self.concentration}")


@dataclass
class RLConfig(PolicyGradientConfig):
    """Plain on-policy RL on one reward (or a fixed weighting of several): the RLHF baseline for SuperHF and the
    single-objective endpoint for CLP, with the same trainer. `weights` empty = equal weights."""

    name: str = "rl"
    stages: list[str] = field(default_factory=lambda: ["calibrate", "train"])
    weights: list[float] = field(default_factory=list)

    def allowed_stages(self) -> list[str]:
        return ["calibrate", "train"]


@dataclass
class RewardedSoupsConfig(PolicyGradientConfig):
    """Rewarded Soups: one RL run per reward (same recipe, trainer.max_steps each), LoRA updates interpolated
    with the weights at inference."""

    name: str = "rewarded_soups"
    stages: list[str] = field(default_factory=lambda: ["calibrate", "train", "eval"])

    def allowed_stages(self) -> list[str]:
        return ["calibrate", "train", "eval"]


@dataclass
class PCMEvalSettings:
    num_prompts: int = 8  # held-out prompts, each under every composite preference
    max_new_tokens: int = 48
    bootstrap: int = 1000


@dataclass
class PCMConfig(RecipeConfig):
    """PCM: frozen per-side LoRA experts merged token by token with weights from a learned controller (REBEL).

    `dimensions` items are "name:low_side:high_side"; `name` is both a reward source of the run (the measured
    attribute, higher = the high side) and a label of the data (to pick each side's expert training data)."""

    name: str = "pcm"
    stages: list[str] = field(default_factory=lambda: ["experts", "pcm", "eval"])
    dimensions: list[str] = field(
        default_factory=lambda: ["verbosity:concise:detailed", "positivity:unfriendly:friendly"]
    )
    experts: str | None = None  # a pcm run folder whose experts to reuse
    expert_steps: int | None = None  # SFT steps per expert; null = trainer.max_steps
    expert_lr: float = 2e-4
    low_side_max: float = 1.0  # data label <= this trains the low side's expert
    high_side_min: float = 3.0  # data label >= this trains the high side's expert
    controller: str = (
        "small"  # small: random-init 2-layer LM on the base tokenizer | base: the base model + LoRA
    )
    controller_hidden: int = 128
    lr: float = 1e-3  # controller
    batch_size: int = 4  # (prompt, preference) pairs per REBEL step, two responses each
    epochs: int = 2  # optimisation passes over each batch of cached samples
    eta: float = 1.0
    bt_beta: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 48
    eval: PCMEvalSettings = field(default_factory=PCMEvalSettings)

    def allowed_stages(self) -> list[str]:
        return ["experts", "pcm", "eval"]

    def __post_init__(self) -> None:
        super().__post_init__()
        for item in self.dimensions:
            if len(item.split(":")) != 3 or not all(item.split(":")):
                raise ConfigError(f"method.dimensions: {item!r} must be name:low_side:high_side")
        sides = [s for item in self.dimensions for s in item.split(":")[1:]]
        if len(set(sides)) != len(sides):
            raise ConfigError(f"method.dimensions: side names must be unique, got {sides}")
        if self.controller not in ("small", "base"):
            raise ConfigError(f"method.controller must be small or base, got {self.controller!r}")


# --------------------------------------------------------------------------------------------- top level


@dataclass
class TrainerConfig:
    max_steps: int = 100
    max_epochs: int | None = None
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = 1.0
    val_check_interval: int | None = None  # steps between validations; null = once at the end
    limit_val_batches: int | None = None
    log_every_n_steps: int = 1
    checkpoint_every_n_steps: int = 50
    deterministic: bool = True

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ConfigError(f"trainer.max_steps must be at least 1, got {self.max_steps}")
        if self.accumulate_grad_batches < 1:
            raise ConfigError("trainer.accumulate_grad_batches must be at least 1")
        at_least("trainer.max_epochs", self.max_epochs, 1)
        at_least("trainer.gradient_clip_val", self.gradient_clip_val, 0)  # null or 0 = no clipping
        at_least("trainer.val_check_interval", self.val_check_interval, 1)
        at_least("trainer.limit_val_batches", self.limit_val_batches, 0)
        at_least("trainer.log_every_n_steps", self.log_every_n_steps, 1)
        at_least("trainer.checkpoint_every_n_steps", self.checkpoint_every_n_steps, 1)


@dataclass
class ReportConfig:
    """Sample generations written to report.md before and after training."""

    prompts: list[str] = field(default_factory=list)  # empty = held-out prompts from the data
    num_samples: int = 4
    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9

    def __post_init__(self) -> None:
        at_least("report.num_samples", self.num_samples, 0)
        at_least("report.max_new_tokens", self.max_new_tokens, 1)
        at_least("report.temperature", self.temperature, 0, strictly=True)
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"report.top_p must be in (0, 1], got {self.top_p}")


@dataclass
class TrainConfig:
    task_name: str = MISSING
    seed: int = 1234
    resume: str | None = None  # null | auto | a run folder
    output_root: str = "outputs"
    method: Any = MISSING
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    hardware: HardwareConfig = MISSING
    logger: LoggerConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    tags: list[str] = field(default_factory=list)
    reward: dict[str, Any] = field(default_factory=dict)  # reward/scorer sources by name (conf/reward)

    def __post_init__(self) -> None:
        if self.hardware.accelerator == "cpu" and self.model.dtype == "float16":
            raise ConfigError(
                "model.dtype=float16 is not usable for training on CPU; use float32 or bfloat16"
            )
        if (
            self.method.name in ("sft", "attribute_model", "reward_model", "steerlm")
            and self.data.format == "prompts"
        ):
            raise ConfigError(f"method={self.method.name} needs responses; data.format=prompts has none")
        if self.method.name == "reward_model" and self.data.format not in ("hh-rlhf", "jsonl"):
            raise ConfigError(
                f"method=reward_model needs preference pairs (data=hh-rlhf), got data={self.data.name}"
            )
        if self.method.name == "steerlm" and self.method.labels == "human" and self.data.format == "hh-rlhf":
            raise ConfigError(
                "method.labels=human needs attribute labels in the data; hh-rlhf has none (use method.labels=apm)"
            )
        if self.method.name == "attribute_model" and self.data.format == "hh-rlhf":
            raise ConfigError("method=attribute_model needs attribute labels (data=oasst1, helpsteer2, demo)")
        if self.resume not in (None, "auto") and not self.resume:
            raise ConfigError("resume must be null, 'auto' or a run folder")
        self._check_reward_sources()

    def _check_reward_sources(self) -> None:
        """Methods that score with named reward sources fail here, before any model loads, when one is missing."""
        if self.method.name == "pcm" and {"experts", "pcm"} & set(self.method.stages):
            names = [item.split(":")[0] for item in self.method.dimensions]
            missing = [n for n in names if n not in self.reward]
            if missing:
                raise ConfigError(
                    f"method=pcm scores each dimension with the reward source of its name: {missing} missing "
                    f"from reward=; add reward=[{','.join(names)}] (or change method.dimensions)"
                )
        if self.method.name == "superhf" and "train" in self.method.stages:
            given = self.method.reward
            if not given:
                raise ConfigError(SUPERHF_REWARD_REQUIRED)
            for key in ("reward", "gold_reward"):
                value = getattr(self.method, key)
                if value and value not in self.reward and not Path(value).is_dir():
                    raise ConfigError(
                        f"method.{key}={value} is neither a source in reward= ({sorted(self.reward)}) "
                        "nor an existing run folder"
                    )


@dataclass
class GenerateConfig:
    model: ModelConfig = MISSING
    hardware: HardwareConfig = MISSING
    run: str | None = None  # a run folder whose trained adapter (or full model) to load
    prompt: str = MISSING
    system: str | None = None
    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    num_return_sequences: int = 1
    seed: int = 1234
    attributes: dict[str, float] = field(default_factory=dict)  # SteerLM runs: attributes.quality=4 ...
    # CLP / Rewarded Soups runs: the reward weighting, one value per objective, summing to 1
    weights: list[float] = field(default_factory=list)
    preference: str | None = None  # PCM runs: one side per dimension, e.g. "concise, friendly"


# ------------------------------------------------------------------------------------------------ eval

EVAL_KINDS = ("reward_accuracy", "generations", "win_rate", "steerability", "superhf", "pareto", "pcm")


@dataclass
class EvalSettings:
    """What `steerable-eval` measures; one option per file in conf/eval/."""

    name: str = MISSING  # reward_accuracy | generations | win_rate
    # val = the held-out split of `data` (as in training) | all = every record | run = the held-out split of the
    # data the evaluated run was trained on (steerability)
    split: str = "val"
    num_prompts: int = 32
    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    batch_size: int = 8
    bootstrap: int = 2000
    baseline: str = "base"  # win_rate: another run folder, or `base` for the untrained starting model
    judge: str | None = None  # win_rate: the reward column that decides (null = the first one)
    meteor_pairs: int = 300
    samples_in_report: int = 8

    def __post_init__(self) -> None:
        if self.name not in EVAL_KINDS:
            raise ConfigError(f"eval.name must be one of {list(EVAL_KINDS)}, got {self.name!r}")
        if self.split not in ("val", "all", "run"):
            raise ConfigError(f"eval.split must be val, all or run, got {self.split!r}")
        if self.num_prompts < 1:
            raise ConfigError("eval.num_prompts must be at least 1")


@dataclass
class EvalConfig:
    run: str = MISSING  # the run folder to evaluate
    eval: EvalSettings = MISSING
    data: DataConfig = MISSING
    hardware: HardwareConfig = MISSING
    logger: LoggerConfig = MISSING
    reward: dict[str, Any] = field(default_factory=dict)
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.eval.name in ("generations", "win_rate") and not self.reward:
            raise ConfigError(
                f"eval={self.eval.name} needs reward sources to score with, e.g. reward=[verbosity]"
            )
