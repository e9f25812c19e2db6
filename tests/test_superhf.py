"""SuperHF: trimming, top-k filtering, exact loss masks with mixed prompt lengths, the KL prior against a hand
computation of the paper's code, and a tiny end-to-end run where only the kept completions are trained on."""

from __future__ import annotations

import json

import pytest
import torch
from hydra.errors import ConfigCompositionException

import steerable.methods.superhf.module as module
from steerable.backbone import load_backbone
from steerable.cli.common import validate
from steerable.cli.train import run
from steerable.config.schema import ConfigError
from steerable.data.tokenize import IGNORE_INDEX, PaddingCollator, end_of_turn_id
from steerable.methods.superhf.loss import KLSettings, superhf_loss
from steerable.methods.superhf.module import top_k_per_prompt, training_example, trim_completion
from tests.conftest import TINY_RUN, compose_config, train_in
from tests.test_backbone import perturb_lora, tiny_config


def test_trim_cuts_at_the_next_speaker_and_strips() -> None:
    assert trim_completion(" Sure, here it is.\n\nHuman: and now?") == "Sure, here it is."
    assert trim_completion("Yes.\n\nUser Two: hi") == "Yes."
    assert trim_completion("I am an Assistant who helps") == "I am an"
    assert trim_completion("ok Human said") == "ok"
    assert trim_completion("Line one.\nLine two: fine") == "Line one.\nLine two: fine"  # one newline: kept
    assert trim_completion("  \n\nHuman: only the other side") == ""


def test_top_k_keeps_the_best_non_empty_completions_per_prompt() -> None:
    texts = ["a", "", "c", "d", "e", "f"]
    scores = [0.1, 9.0, 0.3, 5.0, 1.0, 2.0]  # the empty one scores best but must be dropped
    assert top_k_per_prompt(scores, texts, group=3, k=1) == [2, 3]
    assert top_k_per_prompt(scores, texts, group=3, k=2) == [2, 0, 3, 5]
    assert top_k_per_prompt(scores, ["", "", "", "x", "y", "z"], group=3, k=1) == [3]


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = load_backbone(tiny_config())
    return model, tokenizer


def test_masks_cover_exactly_the_completion_with_mixed_prompt_lengths(tiny) -> None:
    _, tok = tiny
    eot = end_of_turn_id(tok)
    short = [{"role": "user", "content": "Hi"}]
    long = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "A much longer question here?"},
    ]
    examples = [
        training_example(tok, short, "Fine.", eot, True),
        training_example(tok, long, "Yes!", eot, True),
    ]
    batch = PaddingCollator(tok.pad_token_id)(examples)
    for row, (prompt, reply) in enumerate([(short, "Fine."), (long, "Yes!")]):
        prompt_ids = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
        prompt_ids = prompt_ids["input_ids"] if hasattr(prompt_ids, "keys") else prompt_ids
        reply_ids = tok.encode(reply, add_special_tokens=False) + [eot]
        labelled = (batch["labels"][row] != IGNORE_INDEX).nonzero().flatten().tolist()
        assert labelled == list(range(len(prompt_ids), len(prompt_ids) + len(reply_ids)))
        assert batch["labels"][row, labelled].tolist() == reply_ids
    # the short row is padded on the right; padding has no label and no attention
    pad = batch["attention_mask"][0] == 0
    assert pad.any() and (batch["labels"][0][pad] == IGNORE_INDEX).all()


def test_a_completion_cut_by_max_new_tokens_does_not_learn_to_stop(tiny) -> None:
    _, tok = tiny
    eot = end_of_turn_id(tok)
    prompt = [{"role": "user", "content": "Hi"}]
    ended = training_example(tok, prompt, "Fine", eot, ended=True)
    cut = training_example(tok, prompt, "Fine", eot, ended=False)
    assert ended.labels[ended.input_ids.index(eot, len(ended.input_ids) - 3)] == eot
    assert cut.num_target_tokens == ended.num_target_tokens - 1 and eot not in cut.labels


def _batch(tok):
    eot = end_of_turn_id(tok)
    examples = [
        training_example(tok, [{"role": "user", "content": "Hi"}], "Fine, thanks.", eot, True),
        training_example(tok, [{"role": "user", "content": "What is two plus two?"}], "Four.", eot, True),
    ]
    return PaddingCollator(tok.pad_token_id)(examples)


def test_kl_is_zero_at_step_zero() -> None:
    model, tok = load_backbone(tiny_config())  # fresh LoRA: B = 0, the policy equals the reference
    loss, stats = superhf_loss(model, _batch(tok), KLSettings(coef=0.35, clamp=False))
    assert stats["kl"] == 0.0
    assert loss.item() == pytest.approx(stats["ce"])


@pytest.mark.parametrize("aggregation", ["sum", "mean"])
def test_loss_matches_a_hand_computation_of_the_papers_code(aggregation) -> None:
    model, tok = load_backbone(tiny_config())
    perturb_lora(model)
    batch = _batch(tok)
    beta = 0.35
    loss, stats = superhf_loss(model, batch, KLSettings(coef=beta, aggregation=aggregation))
    # The paper's code: HF loss, then KLDivLoss(batchmean, log_target) over logits at labels != -100, per example.
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    logp = out.logits.log_softmax(-1)
    with torch.no_grad(), model.disable_adapter():
        logp0 = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits.log_softmax(-1)
    kls = []
    for i in range(2):
        m = batch["labels"][i] != IGNORE_INDEX
        kl_i = torch.nn.KLDivLoss(reduction="batchmean", log_target=True)(logp[i, m], logp0[i, m])
        kls.append(torch.clamp(kl_i, min=0))
    kl_total = sum(kls) if aggregation == "sum" else sum(kls) / 2
    expected = out.loss + beta * kl_total
    assert stats["kl"] > 1e-4  # the adapter moved the policy, so the KL term is really exercised
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # the gradient flows through both terms
    loss.backward()
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora" in n
    )


def test_kl_options_change_the_value() -> None:
    model, tok = load_backbone(tiny_config())
    perturb_lora(model)
    batch = _batch(tok)
    base = superhf_loss(model, batch, KLSettings())[1]["kl"]
    reverse = superhf_loss(model, batch, KLSettings(direction="policy_to_ref"))[1]["kl"]
    shifted = superhf_loss(model, batch, KLSettings(positions="targets"))[1]["kl"]
    off_loss, off = superhf_loss(model, batch, KLSettings(coef=-1))
    assert base != pytest.approx(reverse) and base != pytest.approx(shifted)
    assert "kl" not in off and off_loss.item() == pytest.approx(off["ce"])


SUPERHF = [
    *TINY_RUN,
    "method=superhf",
    "reward=[verbosity,positivity]",
    "method.reward=verbosity",
    "method.gold_reward=positivity",
    "method.num_prompts=4",
    "method.completions_per_prompt=3",
    "method.sampling.max_new_tokens=10",
    "method.eval_prompts=3",
    "method.best_of_n=2",
    "method.eval_every=1",
    "method.lr=1e-2",
]


def test_tiny_run_trains_only_on_the_kept_completions(tmp_path, monkeypatch) -> None:
    scored: list[tuple[list[str], list[float]]] = []
    trained: list[list[str]] = []
    real_sample, real_loss = module.sample_and_score, module.superhf_loss

    def spy_sample(*args, **kwargs):
        sampled = real_sample(*args, **kwargs)
        scored.append((sampled.texts, sampled.scores))
        return sampled

    def spy_loss(model, batch, kl, reference=None, **kwargs):
        tok = tokenizer_holder[0]
        for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
            target = ids[labels != IGNORE_INDEX].tolist()
            trained.append(tok.decode(target, skip_special_tokens=True))
        return real_loss(model, batch, kl, reference, **kwargs)

    tokenizer_holder = [load_backbone(tiny_config())[1]]
    monkeypatch.setattr(module, "sample_and_score", spy_sample)
    monkeypatch.setattr(module, "superhf_loss", spy_loss)
    run_dir = tmp_path / "run"
    results = train_in(run_dir, *SUPERHF, f"output_root={tmp_path}")  # trained here: the spies watch it

    assert results["train"]["superbatches"] == 2 and results["train"]["steps"] == 2
    expected = []
    for texts, scores in scored:
        for start in range(0, len(texts), 3):
            group = [i for i in range(start, start + 3) if texts[i]]
            if group:
                expected.append(texts[max(group, key=lambda i: scores[i])])
    assert [t.strip() for t in trained] == [t.strip() for t in expected]
    # the run's files: adapter, metrics with the per-superbatch numbers, report and the comparison
    assert (run_dir / "checkpoints" / "final" / "adapter_model.safetensors").is_file()
    metrics = (run_dir / "metrics.csv").read_text()
    for key in (
        "train/reward_all",
        "train/reward_kept",
        "train/kl",
        "eval/gold_reward",
        "train/generate_seconds",
    ):
        assert key in metrics
    arms = {r["arm"] for r in json.loads((run_dir / "superhf" / "results.json").read_text())["arms"]}
    assert arms == {"superhf", "initial", "best-of-2 (initial)"}
    assert "## Policies on held-out prompts" in (run_dir / "report.md").read_text()


def test_reward_trend_finds_a_rising_noisy_curve_and_a_flat_one() -> None:
    from steerable.methods.superhf.evaluate import reward_trend

    rng = torch.Generator().manual_seed(0)
    noise = torch.randn(40, generator=rng).tolist()
    rising = [{"step": str(i), "train/reward_all": str(0.05 * i + 0.3 * noise[i])} for i in range(40)]
    flat = [{"step": str(i), "train/reward_all": str(0.3 * noise[i])} for i in range(40)]
    up, level = reward_trend(rising), reward_trend(flat)
    assert up["slope_p_value"] < 0.01 and abs(up["slope_per_step"] - 0.05) < 3 * up["slope_stderr"]
    assert up["part_means"] == sorted(up["part_means"]) and len(up["part_means"]) == 4
    assert level["slope_p_value"] > 0.05
    # rows without the key (evaluation-only rows in metrics.csv) are skipped
    assert reward_trend([{"step": "0", "train/reward_all": ""}]) == {}


def test_config_errors_name_the_key(tmp_path) -> None:
    base = [*TINY_RUN, "method=superhf", f"output_root={tmp_path}"]

    with pytest.raises(ConfigError, match=r"method\.reward is required"):
        validate(compose_config("train", base))  # at start-up, before any model loads
    with pytest.raises(ConfigError, match=r"method\.reward=x is neither a source in reward="):
        validate(compose_config("train", [*base, "method.reward=x"]))
    base = [*base, "reward=[verbosity]"]
    with pytest.raises(ConfigError, match=r"method\.top_k"):
        validate(
            compose_config(
                "train",
                [*base, "method.reward=verbosity", "method.top_k=5", "method.completions_per_prompt=4"],
            )
        )
    with pytest.raises(ConfigError, match=r"method\.eval_samples"):
        validate(compose_config("train", [*base, "method.reward=verbosity", "method.eval_samples=0"]))
    with pytest.raises(ConfigCompositionException, match=r"method\.kl_direction"):  # an Enum
        validate(compose_config("train", [*base, "method.reward=verbosity", "method.kl_direction=backwards"]))
    with pytest.raises(ConfigError, match=r"method\.gold_reward=\./no_such_rm is neither"):
        validate(
            compose_config("train", [*base, "method.reward=verbosity", "method.gold_reward=./no_such_rm"])
        )


def test_kl_sweep_folder_gives_the_reward_vs_similarity_plot(tmp_path) -> None:
    from steerable.cli.eval import check_run_folder, run_eval

    sweep = tmp_path / "multirun"
    for job, kl_coef in enumerate(["0.0", "0.35"]):
        overrides = [*SUPERHF, f"output_root={tmp_path}", f"method.kl_coef={kl_coef}", "method.num_prompts=2"]
        train_in(sweep / str(job), *overrides)
    check_run_folder(str(sweep))  # the eval CLI accepts a multirun folder, and names a wrong one
    with pytest.raises(ConfigError, match=r"run=.*neither a run folder nor a multirun folder"):
        check_run_folder(str(tmp_path / "out_of_nowhere"))
    cfg = validate(compose_config("eval", [f"run={sweep}", "eval=superhf"]))
    result = run_eval(cfg, tmp_path / "out")
    assert [p["kl_coef"] for p in result["sweep"]] == [0.0, 0.35]
    assert (tmp_path / "out" / "kl_tradeoff.png").is_file()
    assert "## KL-coefficient sweep" in (tmp_path / "out" / "report.md").read_text()


def test_killed_superhf_run_resumes_to_identical_numbers(tmp_path) -> None:
    import csv

    from tests.test_train import Crash, KillAtStep

    overrides = [
        *SUPERHF,
        f"output_root={tmp_path}",
        "method.num_prompts=8",
        "trainer.checkpoint_every_n_steps=2",
    ]

    def numbers(run_dir):
        with open(run_dir / "metrics.csv", newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if r.get("train/loss")]
        return [(int(r["step"]), float(r["train/loss"]), float(r["train/reward_all"])) for r in rows]

    straight = tmp_path / "straight"
    straight.mkdir()
    run(validate(compose_config("train", [*overrides, "method.stages=[train]"])), straight)
    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    with pytest.raises(Crash):
        run(
            validate(compose_config("train", [*overrides, "method.stages=[train]"])),
            interrupted,
            [KillAtStep(3)],
        )
    resumed_cfg = compose_config("train", [*overrides, "method.stages=[train]", f"resume={interrupted}"])
    run(validate(resumed_cfg), interrupted)
    expected, resumed = numbers(straight), numbers(interrupted)
    assert [s for s, _, _ in expected] == [0, 1, 2, 3] and [s for s, _, _ in resumed] == [0, 1, 2, 3]
    for column in (1, 2):  # loss and mean train reward of every superbatch
        assert [r[column] for r in resumed] == pytest.approx([r[column] for r in expected], abs=1e-5)
