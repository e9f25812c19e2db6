"""Dataclass schemas for every config group.

Hydra composes YAML options on top of these, so a typo in a key or a value of the wrong type fails at
composition with the key's full name. Cross-field rules live in ``__post_init__`` and run when the CLI
calls ``OmegaConf.to_object`` before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from steerable.config.base import Choice as Choice  # re-exported, as are ConfigError, _choices, at_least
from steerable.config.base import ConfigError, _choices, at_least
from steerable.config.reward import RewardSpec, check_reward_specs

# ----------------------------------------------------------------------------------------------- model


# hub: hub id or local folder; gguf: a GGUF file (the bundled SmolLM2 by default), converted once and cached;
# tiny: random weights built from `model.tiny` with the project's byte-level tokenizer (tests, smoke runs).
ModelSource = _choices("ModelSource", ["hub", "gguf", "tiny"])
DType = _choices("DType", ["float32", "bfloat16", "float16"])
# Which biases LoRA trains (PEFT's `bias`): none | all | lora_only.
LoraBias = _choices("LoraBias", ["none", "all", "lora_only"])


@dataclass
class LoraConfig:
    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    bias: LoraBias = LoraBias["none"]

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
    dtype: DType = DType["float32"]  # weights dtype on load
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


# ------------------------------------------------------------------------------------------------ data


DataFormat = _choices("DataFormat", ["demo", "jsonl", "oasst1", "hh-rlhf", "helpsteer2", "prompts"])
TooLong = _choices("TooLong", ["truncate", "drop"])
# Train on one half of the non-held-out records (SuperHF trains its "train" and "gold" reward models on disjoint
# halves); null = all of them. The held-out split is the same for both halves.
Half = _choices("Half", ["first", "second"])


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
    half: Half | None = None  # train on one half only (see Half); null = all the non-held-out records
    max_length: int = 512
    too_long: TooLong = TooLong["truncate"]
    num_workers: int = 0
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.format != "demo" and not (self.path or self.hub_id):
            raise ConfigError(f"data={self.name} needs data.path (a local file) or data.hub_id")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
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
    stages: list[str] | None = None  # the stages to run, in order; null = every stage of the method


Scheduler = _choices("Scheduler", ["constant", "linear", "cosine"])


@dataclass
class RecipeConfig(MethodConfig):
    """Optimisation settings every trained method shares."""

    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    scheduler: Scheduler = Scheduler["cosine"]  # learning-rate shape after warm-up
    batch_size: int = 4
    eval_batch_size: int = 8

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"method.lr must be positive, got {self.lr}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError("method.batch_size and method.eval_batch_size must be at least 1")
        at_least("method.weight_decay", self.weight_decay, 0)
        at_least("method.warmup_steps", self.warmup_steps, 0)


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
    resume: str | None = None  # null | auto (the last unfinished run of this task) | a run folder
    output_root: str = "outputs"
    method: Any = MISSING
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    hardware: HardwareConfig = MISSING
    logger: LoggerConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    tags: list[str] = field(default_factory=list)
    reward: dict[str, RewardSpec] = field(default_factory=dict)  # reward/scorer sources by name (conf/reward)

    def __post_init__(self) -> None:
        check_reward_specs(self.reward)
        if self.hardware.accelerator == "cpu" and self.model.dtype == "float16":
            raise ConfigError(
                "model.dtype=float16 is not usable for training on CPU; use float32 or bfloat16"
            )
        if self.resume not in (None, "auto") and not self.resume:
            raise ConfigError("resume must be null, 'auto' or a run folder")
        # Method x data x reward rules are the method's own (MethodSpec.check), run by the registry.


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

# val = the held-out split of `data` (as in training) | all = every record | run = the held-out split of the data
# the evaluated run was trained on (steerability)
EvalSplit = _choices("EvalSplit", ["val", "all", "run"])


@dataclass
class EvalSettings:
    """What `steerable-eval` measures; one option per file in conf/eval/."""

    name: str = MISSING  # an eval kind: the generic ones and those methods declare (steerable-eval --help)
    split: EvalSplit = EvalSplit["val"]
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
        if self.num_prompts < 1:
            raise ConfigError("eval.num_prompts must be at least 1")


@dataclass
class EvalConfig:
    run: str = MISSING  # the run folder to evaluate
    eval: EvalSettings = MISSING
    data: DataConfig = MISSING
    hardware: HardwareConfig = MISSING
    logger: LoggerConfig = MISSING
    reward: dict[str, RewardSpec] = field(default_factory=dict)  # scorers by name (conf/reward)
    seed: int = 1234

    def __post_init__(self) -> None:
        check_reward_specs(self.reward)
        if self.eval.name in ("generations", "win_rate") and not self.reward:
            raise ConfigError(
                f"eval={self.eval.name} needs reward sources to score with, e.g. reward=[verbosity]"
            )
