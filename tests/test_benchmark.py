"""The steerability benchmark: the demo suite trained as one Hydra multirun with tiny models (debug=fast), a
method added in a scratch package, and one leaderboard over all of them; plus the pieces it is made of
(requests -> each policy's controls, the grid, the metrics, the budget ledger, the hh suite's loading)."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import steerable.methods
from steerable.budget import record_generated, record_trained
from steerable.cli.common import validate
from steerable.cli.eval import run_eval
from steerable.config.schema import ConfigError
from steerable.evaluation.metrics import hypervolume
from steerable.evaluation.steering import monotone_fraction
from steerable.evaluation.suite import simplex_grid
from steerable.methods.pcm.policy import Mixture, PreferencePolicy
from steerable.methods.pcm.preferences import composite_probabilities, parse_dimensions
from steerable.methods.prompting.policy import instruction_for
from steerable.methods.registry import specs
from steerable.methods.steerlm.attributes import AttributeSchema
from steerable.methods.steerlm.policy import SteerLMPolicy
from steerable.pipeline import StageResults, Step
from steerable.policies.base import Control, Network, Objective, Request, SteerablePolicy
from tests.conftest import compose_config, run_composed, save_run_config, shared_file
from tests.test_readme import ReadmeSession, check_command, commands_of, new_session

DEMO = {
    "concise": Objective("verbosity", -1, "Keep it short"),
    "positivity": Objective("positivity", 1, "Be upbeat"),
}


def request(concise: float) -> Request:
    return Request({"concise": concise, "positivity": 1 - concise}, DEMO)


# ------------------------------------------------------------------------------------ requests -> controls


class WeightsOnly(SteerablePolicy):
    """The smallest weight-conditioned policy: what CLP, Rewarded Soups and RiC look like to a benchmark."""

    origin, kind = "test", "weighted"

    def __init__(self, options: tuple[str, ...]) -> None:
        self.options = options

    def controls(self) -> list[Control]:
        return [Control("weights", "weights", default=[0.5, 0.5], options=self.options)]

    def _generate(self, prompts, values, settings):
        raise NotImplementedError

    def to(self, device):
        return self


def test_a_weights_control_is_set_by_objective_name_and_a_mismatch_is_one_line() -> None:
    policy = WeightsOnly(("positivity", "concise"))
    assert policy.controls_for(request(0.25)) == {"weights": [0.75, 0.25]}
    with pytest.raises(ConfigError, match=r"weighs objectives \['helpful', 'concise'\]|trained on"):
        WeightsOnly(("helpful", "concise")).controls_for(request(0.25))
    with pytest.raises(ConfigError, match="sum to 1"):
        Request({"concise": 0.5, "positivity": 0.6})


def test_steerlm_dials_follow_their_objectives_weights_and_direction() -> None:
    schema = AttributeSchema(("verbosity", "positivity", "quality"), defaults={"quality": 4})
    policy = SteerLMPolicy(Network(None, None, "test", "steerlm"), schema)
    assert policy.controls_for(request(1.0)) == {"attributes.verbosity": 0, "attributes.positivity": 0}
    assert policy.controls_for(request(0.25)) == {"attributes.verbosity": 3, "attributes.positivity": 3}
    with pytest.raises(ConfigError, match="follows an attribute"):
        policy.controls_for(Request({"a": 0.5, "b": 0.5}))


def test_pcm_takes_the_side_each_objective_leans_to() -> None:
    dims = parse_dimensions(["verbosity:concise:detailed", "positivity:unfriendly:friendly"])
    policy = PreferencePolicy(Mixture(None, None, None, None, dims), "test")
    assert policy.controls_for(request(1.0)) == {
        "preference.verbosity": "concise",
        "preference.positivity": "unfriendly",
    }
    assert policy.controls_for(request(0.0)) == {
        "preference.verbosity": "detailed",
        "preference.positivity": "friendly",
    }


def test_blended_pcm_leans_by_the_weight_and_its_composites_sum_to_one() -> None:
    dims = parse_dimensions(["verbosity:concise:detailed", "positivity:unfriendly:friendly"])
    policy = PreferencePolicy(Mixture(None, None, None, None, dims), "test").alternatives()[
        "blended preferences"
    ]
    assert policy.controls_for(request(0.25)) == {"preference.verbosity": 0.75, "preference.positivity": 0.75}
    # a side's name is a leaning of 0 or 1, so the paper's discrete preferences still work
    assert policy.resolve({"preference": "concise, friendly"}) == {
        "preference.verbosity": 0.0,
        "preference.positivity": 1.0,
    }
    blend = composite_probabilities({"verbosity": 0.75, "positivity": 0.5}, dims)
    assert sum(p for _, p in blend) == pytest.approx(1.0)
    assert dict(blend)[("detailed", "friendly")] == pytest.approx(0.375)
    assert composite_probabilities({"verbosity": 1.0, "positivity": 0.0}, dims) == [
        (("detailed", "unfriendly"), 1.0)
    ]


def test_the_prompting_baseline_asks_in_words_heaviest_goal_first() -> None:
    text = instruction_for(request(0.25), "Goals: {goals}.")
    assert text == "Goals: Be upbeat (75%); Keep it short (25%)."
    assert "Keep it short" not in instruction_for(request(0.0), "{goals}")
    assert Control("instruction", "text", default="").check(5) == "5"  # any text is an instruction


def test_the_grid_covers_the_simplex_and_a_dead_dial_is_not_monotone() -> None:
    assert simplex_grid(["a", "b"], 0.5) == [{"a": 0, "b": 1}, {"a": 0.5, "b": 0.5}, {"a": 1, "b": 0}]
    assert len(simplex_grid(["a", "b", "c"], 0.25)) == 15
    dial = np.array([0.0, 0.5, 1.0])
    assert monotone_fraction(dial, np.array([1.0, 1.0, 1.0])) == 0.0
    assert monotone_fraction(dial, np.array([0.0, 2.0, 1.0])) == 0.5
    assert monotone_fraction(dial, np.array([0.0, 1.0, 2.0])) == 1.0


def test_each_stage_records_its_own_spend_not_its_upstreams(tmp_path) -> None:
    def upstream(done):
        record_generated([type("C", (), {"token_ids": [1, 2, 3]})()] * 2)
        return {}

    def downstream(done):
        done.require("up")
        record_trained(torch.tensor(7))
        return {}

    StageResults(tmp_path, {"up": Step(upstream), "down": Step(downstream, requires=("up",))}).run("down")
    up = json.loads((tmp_path / "stages" / "up.json").read_text())["cost"]
    down = json.loads((tmp_path / "stages" / "down.json").read_text())["cost"]
    assert (up["samples_generated"], up["tokens_generated"], up["tokens_trained"]) == (2, 6, 0)
    assert (down["samples_generated"], down["tokens_generated"], down["tokens_trained"]) == (0, 0, 7)


# --------------------------------------------------------------------------- the suite, end to end (tiny)

SCRATCH = """
from dataclasses import dataclass, field

from steerable.config.method import MethodConfig
from steerable.methods.registry import MethodSpec, Stage


@dataclass
class ScratchConfig(MethodConfig):
    name: str = "scratch_fixed"
    weights: dict[str, float] = field(default_factory=dict)


SPEC = MethodSpec(
    summary="a fixed policy trained for one weighting (a test plugin)",
    config=ScratchConfig,
    stages=(Stage("train", f"{__name__}.impl:train_stage"),),
    policy=f"{__name__}.impl:load",
)
"""
SCRATCH_IMPL = """
from steerable.backbone.adapters import save_model
from steerable.policies.plain import load_plain_policy
from steerable.policies.runs import FINAL_MODEL_DIR, final_metadata


def train_stage(ctx, done):
    model, tokenizer = ctx.backbone()
    weights = dict(ctx.cfg.method.weights)
    save_model(model, tokenizer, ctx.run_dir / FINAL_MODEL_DIR, metadata={"weights": weights})
    return {"trainable_params": 0}


def load(run_dir):
    policy = load_plain_policy(run_dir)
    policy.fixed_weights = final_metadata(run_dir)["weights"]
    return policy
"""


@pytest.fixture
def scratch_method(tmp_path):
    """A method package outside the source tree, found by the registry like any other."""
    package = tmp_path / "plugins" / "scratch_fixed"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(SCRATCH))
    (package / "impl.py").write_text(textwrap.dedent(SCRATCH_IMPL))
    steerable.methods.__path__.append(str(package.parent))
    specs.cache_clear()
    try:
        yield specs()["scratch_fixed"].config
    finally:
        steerable.methods.__path__.remove(str(package.parent))
        specs.cache_clear()
        for name in [m for m in sys.modules if m.startswith("steerable.methods.scratch_fixed")]:
            del sys.modules[name]


def train_scratch(run_dir: Path, config: type, concise: float) -> None:
    composed = compose_config("train", ["model=tiny", "benchmark=demo", "debug=fast", "method=sft"])
    composed.method = OmegaConf.structured(config(weights={"concise": concise, "positivity": 1 - concise}))
    composed.benchmark.arm = "scratch"
    run_composed(run_dir, composed)


BENCHMARK_DOC = "docs/benchmark.md"


@pytest.fixture(scope="module")
def doc_session(tmp_path_factory) -> ReadmeSession:
    """docs/benchmark.md's lines, run as tests/test_readme.py runs every document's (tiny models, debug=fast)."""
    return new_session(tmp_path_factory.mktemp("benchmark_doc"))


@pytest.fixture(scope="module")
def demo_sweep(doc_session: ReadmeSession) -> Path:
    """The document's `steerable-train -m experiment=benchmark_demo`: one job per arm, one multirun folder."""
    (train,) = [c for c in commands_of(BENCHMARK_DOC) if c.program == "steerable-train" and "-m" in c.words]
    check_command(doc_session, train)
    return doc_session.outcome(train).folder


@pytest.mark.parametrize("command", commands_of(BENCHMARK_DOC), ids=lambda c: c.where)
def test_benchmark_doc_command_runs_as_written(doc_session, demo_sweep, command) -> None:
    check_command(doc_session, command)


def leaderboard_config(runs: list[Path], *extra: str):
    listed = ",".join(str(p) for p in runs)
    cfg = validate(compose_config("eval", [f"run=[{listed}]", "eval=leaderboard", *extra]))
    cfg.eval.suite.num_prompts, cfg.eval.suite.sampling.max_new_tokens, cfg.eval.suite.bootstrap = 3, 8, 50
    return cfg


def test_demo_suite_every_arm_and_a_scratch_method_get_one_leaderboard(
    tmp_path, demo_sweep, scratch_method
) -> None:
    sweep = demo_sweep
    scratch = [tmp_path / "scratch_a", tmp_path / "scratch_b"]
    for folder, concise in zip(scratch, (0.0, 1.0), strict=True):
        train_scratch(folder, scratch_method, concise)
    out = tmp_path / "leaderboard"
    result = run_eval(leaderboard_config([sweep, *scratch]), out)
    rows = {r["name"]: r for r in result["rows"]}

    suite = cfg_suite(sweep)
    alternatives = {"rewarded_soups (logit mixing)", "pcm (blended preferences)"}
    assert set(suite["arms"]) | {"scratch"} | alternatives == set(rows)
    for row in rows.values():  # the hypervolume is the tested function's, on the row's own points
        points = np.array([list(p["means"].values()) for p in row["points"]])
        assert row["metrics"]["hypervolume"]["value"] == pytest.approx(
            hypervolume(points, suite["reference"])
        )
    assert len(rows["clp_attn"]["points"]) == 5 and len(rows["sft"]["points"]) == 1
    assert sorted(p["weights"]["concise"] for p in rows["modpo"]["points"]) == [0.1, 0.5, 0.9]  # one per run
    assert rows["sft"]["metrics"]["rho_means/concise"] is None  # a fixed policy has no dial
    assert [p["weights"]["concise"] for p in rows["scratch"]["points"]] == [0.0, 1.0]
    assert rows["clp_attn"]["cost"]["samples_generated"] > 0 and rows["sft"]["cost"]["tokens_trained"] > 0
    board = (out / "leaderboard.md").read_text()
    sft_line = next(line for line in board.splitlines() if line.startswith("| ") and "| sft |" in line)
    assert "n/a" in sft_line and "steerable-train arm=demo_sft experiment=benchmark_demo" in board
    assert {"front.png", "dial_concise.png", "dial_positivity.png"} <= {p.name for p in out.iterdir()}
    hvs = [r["metrics"]["hypervolume"]["value"] for r in result["rows"]]
    assert hvs == sorted(hvs, reverse=True)


def test_the_leaderboard_lands_on_wandb(tmp_path, demo_sweep, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    jobs = sorted(p for p in demo_sweep.iterdir() if p.name.endswith(("-prompting", "-sft")))
    failed = tmp_path / "failed_sft_job"  # a job that died before saving its policy
    shutil.copytree(jobs[-1] / ".hydra", failed / ".hydra")
    out = tmp_path / "leaderboard"
    result = run_eval(leaderboard_config([*jobs, failed], "logger=wandb_offline"), out)
    assert [len(r["points"]) for r in result["rows"] if r["arm"] == "sft"] == [1]  # the failed one left out
    (files,) = [p / "files" for p in (out / "wandb").glob("offline-run-*")]
    tables = [json.loads(t.read_text()) for t in (files / "media" / "table").rglob("*.table.json")]
    assert any(t["columns"][:3] == ["rank", "arm", "hypervolume"] for t in tables)
    assert list((files / "media" / "images").rglob("front*.png"))


def test_an_arm_trained_on_two_seeds_is_one_row_costed_per_seed(tmp_path, demo_sweep) -> None:
    """Two seeds of one arm are one row of 5 points (not 10) whose cost is one seed's, not the sum: here the
    second seed is a copy of the first, so every number must equal the one-seed row's."""
    (job,) = [p for p in demo_sweep.iterdir() if p.name.endswith("-clp_attn")]
    twin = tmp_path / "clp_attn_seed_7"
    shutil.copytree(job, twin)
    saved = OmegaConf.load(twin / ".hydra" / "config.yaml")
    saved.seed = 7
    OmegaConf.save(saved, twin / ".hydra" / "config.yaml")
    (one,) = run_eval(leaderboard_config([job]), tmp_path / "one")["rows"]
    (two,) = run_eval(leaderboard_config([job, twin]), tmp_path / "two")["rows"]
    assert two["seeds"] == [one["seeds"][0], 7] and len(two["points"]) == len(one["points"]) == 5
    assert two["metrics"]["hypervolume"]["value"] == pytest.approx(one["metrics"]["hypervolume"]["value"])
    assert [s["metrics"]["hypervolume"] for s in two["per_seed"]] == pytest.approx(
        [one["metrics"]["hypervolume"]["value"]] * 2
    )
    assert two["cost"]["seeds"] == 2 and two["cost"]["seconds"] == pytest.approx(one["cost"]["seconds"])
    assert two["cost"]["samples_generated"] == one["cost"]["samples_generated"]
    board = (tmp_path / "two" / "leaderboard.md").read_text()
    assert "## Per seed" in board and "| clp_attn | 7 |" in board


def cfg_suite(sweep: Path) -> dict:
    job = next(p for p in sweep.iterdir() if (p / ".hydra").is_dir())
    return OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "config.yaml").benchmark)


# ----------------------------------------------------------------------------------------- the hh suite


def test_hh_suite_loads_its_prompts_and_reward_models_offline(tmp_path) -> None:
    """The GPU suite's own code paths on the shared HH fixture, with a tiny classifier for the hub models."""
    from steerable.backbone.loading import load_tokenizer
    from steerable.evaluation.leaderboard import reward_stack
    from steerable.evaluation.suite import suite_prompts
    from tests.test_rewards_programmatic import _save_tiny_classifier

    fixture = shared_file("hh-rlhf/harmless-base-test.jsonl.gz")
    _save_tiny_classifier(tmp_path / "rm", num_labels=1, pad_in_config=True)
    composed = compose_config(
        "train",
        ["experiment=benchmark_hh", "arm=hh_clp_attn", "model=tiny", "hardware=cpu", f"data.path={fixture}"]
        + [f"benchmark.objectives.{o}.reward.name_or_path={tmp_path / 'rm'}" for o in ("helpful", "harmless")]
        + [f"reward.{o}.name_or_path={tmp_path / 'rm'}" for o in ("helpful", "harmless")],
    )
    cfg = validate(composed)
    run_dir = tmp_path / "run"
    save_run_config(run_dir, composed)
    prompts = suite_prompts([run_dir], cfg.benchmark, load_tokenizer(cfg.model))
    assert 2 <= len(prompts) <= cfg.benchmark.num_prompts  # the held-out prompts that fit
    assert all(p[-1]["role"] == "user" for p in prompts)
    stack = reward_stack(cfg.benchmark)
    scores = stack.score([p[-1]["content"] for p in prompts[:3]], ["Sure.", "No.", "Here is how."])
    assert stack.names == ["helpful", "harmless"] and scores.shape == (3, 2)


@pytest.mark.parametrize("suite", ["demo", "hh"])
def test_each_suite_experiment_sweeps_exactly_the_suites_arms(suite: str) -> None:
    """The arms the multirun trains are the arms the leaderboard expects (a missing one would be reported); an
    arm may be several jobs (MODPO's weightings), each naming it in `benchmark.arm`."""
    root = Path(__file__).resolve().parents[1]
    experiment = OmegaConf.load(root / "experiments" / f"benchmark_{suite}.yaml")
    swept = str(experiment.hydra.sweeper.params.arm).split(",")
    arms = OmegaConf.load(root / "conf" / "benchmark" / f"{suite}.yaml").arms
    assert all(option.startswith(f"{suite}_") for option in swept)
    covered = [OmegaConf.load(root / "conf" / "arm" / f"{option}.yaml").benchmark.arm for option in swept]
    assert list(dict.fromkeys(covered)) == list(arms)
    for option, arm in zip(swept, covered, strict=True):
        assert option == f"{suite}_{arm}" or option.startswith(f"{suite}_{arm}_")


def test_the_budget_column_names_what_was_over_in_the_suites_units() -> None:
    from types import SimpleNamespace

    from steerable.config.benchmark import BudgetConfig
    from steerable.evaluation.leaderboard_report import budget

    suite = SimpleNamespace(budget=BudgetConfig(samples=1200, tokens=100_000, minutes=20))
    cost = {"samples_generated": 960, "tokens_trained": 80_000, "seconds": 1794.0}
    assert budget(cost, suite) == "OVER: minutes 29.9 > 20"
    assert budget({**cost, "seconds": 1200.0}, suite) == "within"
    assert budget({**cost, "samples_generated": 1300}, suite).startswith("OVER: samples 1,300 > 1,200")
    assert budget({**cost, "seconds": None}, suite).startswith("unknown")


def test_the_collapse_table_counts_replies_that_say_nothing() -> None:
    """A length objective scores an empty reply best; the leaderboard shows how many replies were empty."""
    from types import SimpleNamespace

    import numpy as np

    from steerable.evaluation.answers import Answers, Cell
    from steerable.evaluation.leaderboard_report import reward_table

    cells = [
        Cell({"concise": 1.0}, np.zeros((3, 1)), ["", "  \n", "Short."]),
        Cell({"concise": 0.0}, np.zeros((3, 1)), ["A reply.", "Another one.", "!"]),
    ]
    row = SimpleNamespace(name="arm", metrics={}, answers=Answers(cells))
    _, header, body = reward_table([row], ["concise"])
    assert header[-1] == "empty replies"
    assert body[0][-1] == "2 of 6"  # "!" is a word to str.split, so only the blank replies count


def seeded_cells(spread: float, prompts: int = 6) -> list:
    """A two-axis row on the grid w_concise in {0, .5, 1}: concise rises by `spread` across the dial (plus a
    small per-prompt offset), positivity falls by 1."""
    from steerable.evaluation.answers import Cell

    offsets = np.linspace(0, 0.1, prompts)
    return [
        Cell(
            {"concise": w, "positivity": 1 - w},
            np.stack([spread * w + offsets, -w + offsets], axis=1),
            [f"reply {i}" for i in range(prompts)],
            default=w == 0.5,
        )
        for w in (0.0, 0.5, 1.0)
    ]


def test_a_row_of_several_seeds_is_their_mean_and_its_intervals_cover_the_seeds() -> None:
    """One seed steers concise by 2, the other not at all: the row reads the mean (spread 1), each seed keeps
    its own value, and resampling the seeds widens the interval to span both, where prompts alone would not."""
    from steerable.evaluation.steering import row_statistic, with_intervals

    names, reference, default = ["concise", "positivity"], [-5.0, -5.0], {"concise": 0.5, "positivity": 0.5}
    replicas = [seeded_cells(2.0), seeded_cells(0.0)]
    stat = row_statistic(replicas, names, reference, default)
    every = np.arange(6)
    assert stat(every, np.array([0, 1]))["spread/concise"] == pytest.approx(1.0)
    assert stat(every, np.array([0]))["spread/concise"] == pytest.approx(2.0)
    assert stat(every, np.array([1]))["spread/concise"] == pytest.approx(0.0)
    means = np.mean([[c.scores.mean(0) for c in r] for r in replicas], axis=0)
    assert stat(every, np.array([0, 1]))["hypervolume"] == pytest.approx(hypervolume(means, reference))

    over_seeds = with_intervals(stat, 6, 200, seed=0, seeds=2)["spread/concise"]
    assert (over_seeds.low, over_seeds.high) == (pytest.approx(0.0), pytest.approx(2.0))
    pooled = [[c for c in seeded_cells(1.0)]]  # the same means as one seed: prompts barely move them
    over_prompts = with_intervals(row_statistic(pooled, names, reference, default), 6, 200, seed=0)[
        "spread/concise"
    ]
    assert over_prompts.high - over_prompts.low < 1e-9


def test_a_one_seed_row_resamples_prompts_exactly_as_before() -> None:
    """The seed draw is skipped for one seed, so recorded one-seed intervals reproduce digit for digit."""
    from steerable.evaluation.steering import row_statistic, with_intervals

    cells = seeded_cells(2.0)
    for i, c in enumerate(cells):  # prompt-dependent noise, so the resamples differ
        c.scores = c.scores + np.random.default_rng(i).normal(0, 0.5, c.scores.shape)
    stat = row_statistic(
        [cells], ["concise", "positivity"], [-5.0, -5.0], {"concise": 0.5, "positivity": 0.5}
    )
    got = with_intervals(stat, 6, 100, seed=3)["hypervolume"]
    rng = np.random.default_rng(3)
    expected = np.quantile(
        [stat(rng.integers(0, 6, 6), np.arange(1))["hypervolume"] for _ in range(100)], [0.025, 0.975]
    )
    assert (got.low, got.high) == (expected[0], expected[1])


def test_seeds_answer_the_same_requests_or_the_odd_one_is_left_out() -> None:
    from steerable.evaluation.answers import Answers
    from steerable.evaluation.rows import Row
    from steerable.evaluation.suite import Arm

    row = Row("modpo", Arm("modpo"))
    row.add(1, Answers(seeded_cells(1.0)))
    row.add(2, Answers(seeded_cells(3.0)[::-1]))  # a sweep found in another job order
    row.add(3, Answers(seeded_cells(1.0)[:2]))  # one job failed
    row.align_seeds()
    assert list(row.by_seed) == [1, 2]
    assert [c.weights["concise"] for c in row.answers.cells] == [0.0, 0.5, 1.0]
    assert row.answers.cells[2].scores[:, 0] == pytest.approx(2.0 + np.linspace(0, 0.1, 6))
    assert len(row.answers.cells[0].texts) == 12  # both seeds' replies count (empty replies, METEOR)


def test_an_arms_runs_are_grouped_by_their_saved_seed_and_a_bad_seed_is_named(tmp_path) -> None:
    from steerable.evaluation.suite import Arm

    def run(name: str, seed) -> Path:
        (tmp_path / name / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create({"seed": seed}), tmp_path / name / ".hydra" / "config.yaml")
        return tmp_path / name

    sweep = [run("a1", 1), run("b1", 1), run("a2", 2), run("b2", 2)]  # a sweep of two runs, on two seeds
    assert Arm("modpo", sweep).seeds() == {1: sweep[:2], 2: sweep[2:]}
    with pytest.raises(ConfigError, match=r"bad.*seed must be an integer, got 'one'"):
        Arm("modpo", [run("bad", "one")]).seeds()


def test_runs_of_one_suite_agree_across_versions_and_a_changed_suite_is_refused(tmp_path) -> None:
    """Old run folders (flat sampling keys, a roster without a later arm) are the same suite as new ones;
    a run whose yardstick differs (another prompt count) is refused naming it."""
    import pytest
    import yaml

    from steerable.config.schema import ConfigError
    from steerable.evaluation.suite import load_suite

    base = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf/benchmark/demo.yaml").read_text())
    base.pop("defaults")

    def run(name: str, **benchmark) -> Path:
        folder = tmp_path / name / ".hydra"
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(yaml.safe_dump({"benchmark": {**base, **benchmark}}))
        return folder.parent

    new = run("new", arm="clp_full")
    old_roster = [a for a in base["arms"] if a != "clp_full"]
    old = run("old", arm="steerlm", arms=old_roster, sampling=None, max_new_tokens=96, do_sample=False)
    suite = load_suite(None, [old, new])
    assert suite.sampling.max_new_tokens == 96 and suite.sampling.do_sample is False
    assert suite.arms[: len(old_roster)] == old_roster and "clp_full" in suite.arms
    other = run("other", arm="pcm", num_prompts=3)
    with pytest.raises(ConfigError, match=r"other was trained in another suite"):
        load_suite(None, [new, other])
