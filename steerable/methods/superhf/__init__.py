"""SuperHF (Mukobi et al. 2023): iterated best-of-n with reward filtering, supervised loss and a KL prior."""

from steerable.methods.registry import Evaluation, MethodSpec, Stage
from steerable.methods.superhf.config import SuperHFConfig, check

SPEC = MethodSpec(
    name="superhf",
    summary="iterated best-of-n sampling, reward filtering, SFT + KL prior",
    config=SuperHFConfig,
    stages=(
        Stage("train", "steerable.methods.superhf.stages:train_stage"),
        Stage("eval", "steerable.methods.superhf.stages:eval_stage", ("train",)),
    ),
    check=check,
    needs=("reward=[verbosity]", "method.reward=verbosity"),
    evaluation=Evaluation(
        "superhf",
        "steerable.methods.superhf.evaluate:eval_superhf",
        doc="gold reward, KL, METEOR vs baselines",
    ),
    paper="Mukobi et al. 2023, SuperHF",
)
