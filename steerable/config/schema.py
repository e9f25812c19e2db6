"""Dataclass schemas for every config group, one module per concern: base (errors, choices), model, data,
hardware, logger, method (the keys all methods share), reward (typed reward specs), sampling (the decoding keys
every config that samples nests) and, here, the top-level run configs. This module also re-exports every
schema, so `from steerable.config.schema import X` keeps working.

Hydra composes YAML options on top of these, so a typo in a key or a value of the wrong type fails at
composition with the key's full name. Cross-field rules live in ``__post_init__`` and run when the CLI
calls ``OmegaConf.to_object`` before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from steerable.config.base import Choice, ConfigError, at_least, choice_enum
from steerable.config.benchmark import BenchmarkConfig
from steerable.config.data import DataConfig, DataFormat, Half, TooLong
from steerable.config.generation import Engine, GenerationConfig
from steerable.config.hardware import DEEPSPEED_NEEDS_GPU, Accelerator, HardwareConfig, Precision, Strategy
from steerable.config.logger import LoggerConfig, WandbConfig
from steerable.config.method import MethodConfig, RecipeConfig, Scheduler
from steerable.config.model import DType, LoraBias, LoraConfig, ModelConfig, ModelSource, TinyModelConfig
from steerable.config.reward import RewardSpec, check_reward_specs
from steerable.config.sampling import SamplingConfig

__all__ = [  # the re-exported schemas; the run configs below are this module's own
    "DEEPSPEED_NEEDS_GPU",
    "Accelerator",
    "Choice",
    "ConfigError",
    "DType",
    "DataConfig",
    "DataFormat",
    "Engine",
    "GenerationConfig",
    "Half",
    "HardwareConfig",
    "LoggerConfig",
    "LoraBias",
    "LoraConfig",
    "MethodConfig",
    "ModelConfig",
    "ModelSource",
    "Precision",
    "RecipeConfig",
    "RewardSpec",
    "SamplingConfig",
    "Scheduler",
    "Strategy",
    "TinyModelConfig",
    "TooLong",
    "WandbConfig",
    "at_least",
    "choice_enum",
]

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
    num_samples: int = 4  # prompts shown
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(max_new_tokens=64, temperature=0.7, top_p=0.9)
    )

    def __post_init__(self) -> None:
        at_least("report.num_samples", self.num_samples, 0)


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
    generation: GenerationConfig = field(default_factory=GenerationConfig)  # the sampling engine
    benchmark: BenchmarkConfig | None = None  # the suite this run is an arm of (benchmark=<suite> arm=<arm>)

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
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.7, top_p=0.9))
    num_return_sequences: int = 1
    seed: int = 1234
    attributes: dict[str, float] = field(default_factory=dict)  # SteerLM runs: attributes.quality=4 ...
    # CLP / Rewarded Soups runs: the reward weighting, one value per objective, summing to 1
    weights: list[float] = field(default_factory=list)
    preference: str | None = None  # PCM runs: one side per dimension, e.g. "concise, friendly"
    # Any policy's controls by name (an unknown one is an error listing the run's own):
    # controls.attributes.quality=4, controls.weights=[0.2,0.8], controls.preference.verbosity=concise. The
    # three keys above are shorthands for the same controls.
    controls: dict[str, Any] = field(default_factory=dict)
    generation: GenerationConfig = field(default_factory=GenerationConfig)  # the sampling engine


@dataclass
class ServeLimits:
    """What one request may ask of `steerable-serve`; over a limit is an error naming it (never a clamp)."""

    body_bytes: int = 65536  # the request body
    prompt_tokens: int = 1024  # the chat-formatted prompt (system + user), before the controls' conditioning
    max_new_tokens: int = 512  # the most a request's settings.max_new_tokens may ask for
    deadline_s: float = 300.0  # one generation's wall-clock budget, queueing excluded
    queue: int = 8  # requests waiting behind the one generating; more get 503 with Retry-After

    def __post_init__(self) -> None:
        for name in ("body_bytes", "prompt_tokens", "max_new_tokens", "queue"):
            at_least(f"limits.{name}", getattr(self, name), 1)
        if not self.deadline_s > 0:
            raise ConfigError(f"limits.deadline_s must be positive, got {self.deadline_s}")


@dataclass
class ServeConfig:
    run: str = MISSING  # the run folder whose policy to serve
    hardware: HardwareConfig = MISSING
    host: str = "127.0.0.1"  # loopback only unless asked: the page runs the model for whoever reaches it
    port: int = 7860  # 0 = any free port (printed at start)
    # a bearer token every API request must carry (Authorization: Bearer <token>); null = the environment's
    # STEERABLE_SERVE_TOKEN, else none (fine on loopback; a warning when bound beyond it)
    token: str | None = None
    limits: ServeLimits = field(default_factory=ServeLimits)
    # the page's starting settings; each request may change them
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.7, top_p=0.9))
    seed: int = 1234
    generation: GenerationConfig = field(default_factory=GenerationConfig)  # the sampling engine

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in [0, 65535], got {self.port}")
        wanted, limit = self.sampling.max_new_tokens, self.limits.max_new_tokens
        if wanted > limit:
            raise ConfigError(f"sampling.max_new_tokens={wanted} is over limits.max_new_tokens={limit}")
        if self.token is not None and not self.token.strip():
            raise ConfigError("token= is empty; give a token or leave it out")


@dataclass
class ExportConfig:
    run: str = MISSING  # the run folder whose trained policy to export
    # the folder to write: new, empty, or an earlier export (replaced only with overwrite=true); never a file,
    # a run folder or a folder inside one. Written in a temporary sibling and renamed into place.
    out: str = MISSING
    overwrite: bool = False
    merged: bool = False  # true: LoRA folded into the weights (plain transformers, vLLM); false: the adapter
    # CLP / Rewarded Soups runs (whose weighting chooses the parameters): the one weighting to export, one value
    # per objective summing to 1 (default uniform); controls.* the same by name. Prompt-side controls stay dials.
    weights: list[float] = field(default_factory=list)
    controls: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ eval

# val = the held-out split of `data` (as in training) | all = every record | run = the held-out split of the data
# the evaluated run was trained on (steerability)
EvalSplit = choice_enum("EvalSplit", ["val", "all", "run"])


@dataclass
class SuiteSamplingChanges:
    """eval=leaderboard: the suite's `benchmark.sampling.*` keys that may change (null = the suite's own)."""

    max_new_tokens: int | None = None
    do_sample: bool | None = None


@dataclass
class SuiteChanges:
    """eval=leaderboard: evaluation settings of the runs' suite to change (null = the suite's own)."""

    num_prompts: int | None = None
    batch_size: int | None = None
    bootstrap: int | None = None
    grid_step: float | None = None
    sampling: SuiteSamplingChanges = field(default_factory=SuiteSamplingChanges)

    def given(self) -> dict[str, Any]:
        """The changed keys, dotted as under `benchmark.` (`num_prompts`, `sampling.max_new_tokens`)."""
        changed = {k: v for k, v in vars(self).items() if k != "sampling"}
        changed |= {f"sampling.{k}": v for k, v in vars(self.sampling).items()}
        return {k: v for k, v in changed.items() if v is not None}


@dataclass
class EvalSettings:
    """What `steerable-eval` measures; one option per file in conf/eval/."""

    name: str = MISSING  # an eval kind: the generic ones and those methods declare (steerable-eval --help)
    split: EvalSplit = EvalSplit["val"]
    num_prompts: int = 32
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.7, top_p=0.9))
    batch_size: int = 8
    bootstrap: int = 2000
    baseline: str = "base"  # win_rate: another run folder, or `base` for the untrained starting model
    judge: str | None = None  # win_rate: the reward column that decides (null = the first one)
    meteor_pairs: int = 300
    samples_in_report: int = 8
    # generations / win_rate: the evaluated policy's controls (unset ones take the policy's defaults), e.g.
    # eval.controls.weights=[0.5,0.5] for a CLP run, eval.controls.preference='concise, friendly' for PCM
    controls: dict[str, Any] = field(default_factory=dict)
    # leaderboard: changes to the suite the runs were trained in (eval.suite.num_prompts=4), shown in the report
    suite: SuiteChanges = field(default_factory=SuiteChanges)

    def __post_init__(self) -> None:
        if self.num_prompts < 1:
            raise ConfigError("eval.num_prompts must be at least 1")


@dataclass
class EvalConfig:
    # the run folder to evaluate; eval=leaderboard: a multirun folder of a suite's arms, or a list of runs
    run: Any = MISSING
    eval: EvalSettings = MISSING
    data: DataConfig = MISSING
    hardware: HardwareConfig = MISSING
    logger: LoggerConfig = MISSING
    reward: dict[str, RewardSpec] = field(default_factory=dict)  # scorers by name (conf/reward)
    seed: int = 1234
    generation: GenerationConfig = field(default_factory=GenerationConfig)  # the sampling engine
    benchmark: BenchmarkConfig | None = None  # eval=leaderboard: the suite, when the runs do not carry one

    def __post_init__(self) -> None:
        check_reward_specs(self.reward)
        if isinstance(self.run, list | tuple) and self.eval.name != "leaderboard":
            raise ConfigError(
                f"run=[...] (a list of runs) is for eval=leaderboard, not eval={self.eval.name}"
            )
        if self.eval.name in ("generations", "win_rate") and not self.reward:
            raise ConfigError(
                f"eval={self.eval.name} needs reward sources to score with, e.g. reward=[verbosity]"
            )
