"""`steerable-eval`: measure a finished run; results land in <run>/eval/<kind>/<timestamp>/."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from steerable.cli import common
from steerable.config.schema import ConfigError, EvalConfig

log = logging.getLogger("steerable")


def check_run_folder(run: Any) -> None:
    """A run folder, or a Hydra multirun folder of them (a sweep: `eval=superhf` compares its jobs), or a list
    of either (eval=leaderboard)."""
    if isinstance(run, list | tuple):
        for item in run:
            check_run_folder(item)
        return
    path = Path(run)
    if (path / ".hydra").is_dir():
        return
    if path.is_dir() and any((child / ".hydra").is_dir() for child in path.iterdir()):
        return
    raise ConfigError(f"run={run} is neither a run folder nor a multirun folder of runs (no .hydra/ inside)")


GENERIC_KINDS = {
    "generations": "any policy's replies scored by the reward sources",
    "win_rate": "a policy against a baseline (eval.baseline=base: its starting model; or another run)",
    "leaderboard": "every arm of a benchmark suite (a multirun folder or a list of runs) on the suite's "
    "request grid: steerability, hypervolume, reward, KL, collapse and cost, ranked",
}


def eval_kinds() -> dict[str, str]:
    """Every `eval=` kind and what it measures: the generic ones and those the methods declare."""
    from steerable.methods.registry import evaluations

    return {**GENERIC_KINDS, **{kind: e.doc for kind, e in evaluations().items()}}


def run_eval(cfg: EvalConfig, out_dir: Path) -> dict:
    """One evaluation of `cfg.run` into `out_dir` (report.md, results.json, plots): a generic kind on the
    run's policy, or the evaluation its method declares."""
    from steerable.evaluation.runner import eval_generations, eval_win_rate, finish
    from steerable.methods.registry import evaluations, load_policy, resolve
    from steerable.policies.plain import starting_policy
    from steerable.report import Report

    kind = cfg.eval.name
    if kind not in eval_kinds():
        raise ConfigError(f"eval={kind} is not an eval kind; kinds: {sorted(eval_kinds())}")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report(f"eval {kind}: {cfg.run}")
    if kind == "leaderboard":
        from steerable.evaluation.leaderboard import eval_leaderboard

        return finish(eval_leaderboard(cfg, out_dir, report, load_policy), report, out_dir)
    if kind in GENERIC_KINDS:
        policy = load_policy(Path(cfg.run))
        policy.generation = cfg.generation
        if kind == "generations":
            return finish(eval_generations(cfg, policy, out_dir, report), report, out_dir)
        base = cfg.eval.baseline
        baseline = starting_policy(policy) if base == "base" else load_policy(Path(base))
        baseline.generation = cfg.generation
        return finish(eval_win_rate(cfg, policy, baseline, out_dir, report), report, out_dir)
    evaluation = evaluations()[kind]
    check_reads(cfg.run, kind, evaluation.reads)
    return finish(resolve(evaluation.run)(cfg, out_dir, report), report, out_dir)


def check_reads(run: str, kind: str, reads: str) -> None:
    """A scorer evaluation needs a reward/attribute model run; a policy evaluation refuses one."""
    from steerable.rewards.scoring_model import scorer_dir

    try:
        scorer_dir(run)
        is_scorer = True
    except FileNotFoundError:
        is_scorer = False
    if reads == "scorer" and not is_scorer:
        raise ConfigError(f"eval={kind} needs a reward or attribute model run; {run} is a policy")
    if reads == "policy" and is_scorer:
        raise ConfigError(f"eval={kind} needs a policy run; {run} is a reward/attribute model")


@hydra.main(config_path=common.CONF_DIR, config_name="eval", version_base="1.3")
@common.report_user_errors
def _main(dict_cfg: DictConfig) -> None:
    cfg: EvalConfig = common.validate(dict_cfg)
    check_run_folder(cfg.run)
    from steerable.hardware import keep_cpu_memory

    cfg, choice = common.machine_hardware(cfg)
    keep_cpu_memory(cfg.hardware, choice)
    common.set_threads(cfg.hardware.torch_threads)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    result = run_eval(cfg, out_dir)
    print(json.dumps(result, indent=2, default=str))
    log.info("report: %s", out_dir / "report.md")


# debug=fast for an evaluation: a few prompts and short replies (the training `debug` group has no eval keys).
FAST_EVAL = {
    "eval.num_prompts": "2",
    "eval.sampling.max_new_tokens": "8",
    "eval.batch_size": "2",
    "data.max_records": "24",
}


# and for a leaderboard, the suite's own sizes (the report lists them as changed from the suite)
FAST_LEADERBOARD = {
    "eval.suite.num_prompts": "2",
    "eval.suite.sampling.max_new_tokens": "8",
    "eval.suite.bootstrap": "50",
}


def shrunk_for_debug(argv: list[str]) -> list[str]:
    """`debug=fast` replaced by FAST_EVAL overrides (those the user did not set)."""
    if "debug=fast" not in argv:
        return argv
    given = {a.split("=", 1)[0] for a in argv if "=" in a}
    rest = [a for a in argv if a != "debug=fast"]
    fast = {**FAST_EVAL, **(FAST_LEADERBOARD if "eval=leaderboard" in argv else {})}
    return rest + [f"{k}={v}" for k, v in fast.items() if k not in given]


def main() -> None:
    common.setup_hydra()
    sys.argv = [sys.argv[0], *shrunk_for_debug(sys.argv[1:])]
    common.launch_on_run("eval", "steerable-eval run=outputs/quickstart/<timestamp>", _main)


if __name__ == "__main__":
    main()
