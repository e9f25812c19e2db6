"""steerable-eval on tiny runs: reward accuracy of a reward model, generations and win rate of a policy."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tests.conftest import run_cli, train_in
from tests.test_cli import cli
from tests.test_scoring_models import write_separable_pairs

TINY = ["model=tiny", "hardware=cpu", "report.sampling.max_new_tokens=4"]


def train(tmp_path: Path, *overrides: str) -> Path:
    """A tiny run to evaluate, trained in this process (tests/test_cli.py tests the train CLI's own process)."""
    run_dir = tmp_path / "run"
    train_in(run_dir, *TINY, f"output_root={tmp_path}", *overrides)
    return run_dir


def only_eval_dir(run_dir: Path, kind: str) -> Path:
    (folder,) = list((run_dir / "eval" / kind).iterdir())
    return folder


def test_reward_accuracy_eval_of_a_reward_model(tmp_path) -> None:
    data = write_separable_pairs(tmp_path / "pairs.jsonl")
    run_dir = train(
        tmp_path,
        "method=reward_model",
        "data=hh-rlhf",
        f"data.path={data}",
        "data.val_fraction=0.25",
        "trainer.max_steps=30",
        "method.lr=5e-3",
        "data.max_length=128",
    )
    result = cli(
        "eval",
        f"run={run_dir}",
        "eval=reward_accuracy",
        "data=hh-rlhf",
        f"data.path={data}",
        "data.val_fraction=0.25",
        "eval.bootstrap=200",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = only_eval_dir(run_dir, "reward_accuracy")
    metrics = json.loads((out / "results.json").read_text())
    assert metrics["pairs"] == 24 and metrics["accuracy"] >= 0.9
    assert metrics["ci_low"] <= metrics["accuracy"] <= metrics["ci_high"]
    assert (out / "margins.png").stat().st_size > 0 and "Pairwise accuracy" in (out / "report.md").read_text()


def test_generations_and_win_rate_of_a_policy(tmp_path) -> None:
    run_dir = train(tmp_path, "method=sft", "data=demo", "data.max_records=24", "trainer.max_steps=2")
    common = [
        f"run={run_dir}",
        "data=demo",
        "data.max_records=24",
        "eval.split=all",
        "eval.num_prompts=3",
        "eval.sampling.max_new_tokens=6",
        "reward=[verbosity,positivity]",
    ]
    result = cli("eval", *common, "eval=generations", "logger=wandb_offline", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = only_eval_dir(run_dir, "generations")
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))  # the completions table went to W&B
    assert (out / "rewards.png").stat().st_size > 0
    metrics = json.loads((out / "results.json").read_text())
    assert set(metrics["rewards"]) == {"verbosity", "positivity"}
    report = (out / "report.md").read_text()  # units beside every reward column
    assert "| verbosity (log words) |" in report and "positivity (VADER compound, -1 to 1)" in report
    similarity = metrics["meteor_similarity"]  # nan when the tiny model's completions are empty
    assert math.isnan(similarity) or 0.0 <= similarity <= 1.0
    # in this process: the eval CLI's own process is checked by the generations line above
    result = run_cli(
        "eval", *common, "eval=win_rate", "eval.bootstrap=100", "eval.judge=verbosity", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((only_eval_dir(run_dir, "win_rate") / "results.json").read_text())
    assert metrics["prompts"] == 3 and metrics["ci_low"] <= metrics["win_rate"] <= metrics["ci_high"]


def test_eval_kind_must_match_the_run(tmp_path) -> None:
    run_dir = train(
        tmp_path,
        "method=sft",
        "data=demo",
        "data.max_records=24",
        "trainer.max_steps=1",
        "method.stages=[train]",
    )
    result = run_cli("eval", f"run={run_dir}", "eval=reward_accuracy", cwd=tmp_path)  # in process
    assert result.returncode != 0 and "needs a reward or attribute model run" in result.stderr


def test_generations_without_rewards_is_a_config_error(tmp_path) -> None:
    run_dir = tmp_path / "r"
    (run_dir / ".hydra").mkdir(parents=True)
    result = cli("eval", f"run={run_dir}", "eval=generations", cwd=tmp_path)
    assert result.returncode != 0 and "reward=[verbosity]" in result.stderr
