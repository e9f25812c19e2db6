"""Register the schemas with Hydra's ConfigStore so YAML options are validated against them."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from steerable.config.schema import (
    AttributeModelConfig,
    CLPConfig,
    EvalConfig,
    GenerateConfig,
    PCMConfig,
    RewardedSoupsConfig,
    RewardModelConfig,
    RLConfig,
    SFTConfig,
    SteerLMConfig,
    SuperHFConfig,
    TrainConfig,
)

METHOD_SCHEMAS = {
    "sft": SFTConfig,
    "reward_model": RewardModelConfig,
    "attribute_model": AttributeModelConfig,
    "steerlm": SteerLMConfig,
    "superhf": SuperHFConfig,
    "clp": CLPConfig,
    "rewarded_soups": RewardedSoupsConfig,
    "rl": RLConfig,
    "pcm": PCMConfig,
}


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="generate_schema", node=GenerateConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    for name, node in METHOD_SCHEMAS.items():
        cs.store(name=f"method_schema_{name}", node=node)
