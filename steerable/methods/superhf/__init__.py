"""SuperHF (Mukobi et al. 2023): iterated best-of-n with reward filtering, supervised loss and a KL prior."""

from steerable.methods.registry import Evaluation, MethodSpec, train_then_eval
from steerable.methods.superhf.config import SuperHFConfig, check

SPEC = MethodSpec(
    summary="iterated best-of-n sampling, reward filtering, SFT + KL prior",
    config=SuperHFConfig,
    stages=train_then_eval(),
    check=check,
    needs=("reward=[verbosity]", "method.reward=verbosity"),
    evaluation=Evaluation("superhf", ".evaluate:eval_superhf", doc="gold reward, KL, METEOR vs baselines"),
    paper="Mukobi et al. 2023, SuperHF",
)
