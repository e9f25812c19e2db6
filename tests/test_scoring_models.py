"""Reward model and attribute model on the tiny backbone: losses, masks, metadata, end-to-end runs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from steerable.backbone import load_backbone
from steerable.cli.train import run
from steerable.methods.reward_models.loss import bradley_terry_loss, masked_mse
from steerable.rewards.scoring_model import ScorerMeta, ScoringModel, load_scorer, save_scorer
from tests.test_backbone import tiny_config


def write_separable_pairs(path: Path, n: int = 96, seed: int = 0) -> Path:
    """HH-format pairs where the chosen reply always praises and the rejected one always complains."""
    rng = random.Random(seed)
    topics = ["tea", "rain", "cats", "maps", "jazz", "bread", "chess", "trains"]
    rows = []
    for i in range(n):
        topic = rng.choice(topics)
        context = f"\n\nHuman: Tell me about {topic} number {i}."
        rows.append(
            {
                "chosen": f"{context}\n\nAssistant: Yes! {topic} is great and lovely.",
                "rejected": f"{context}\n\nAssistant: No. {topic} is awful, go away.",
            }
        )
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_bradley_terry_loss_by_hand() -> None:
    scores = torch.tensor([[2.0], [0.0], [1.0], [1.0]])  # chosen (2, 0), rejected (1, 1)
    loss, accuracy = bradley_terry_loss(scores)
    expected = (
        -(
            torch.nn.functional.logsigmoid(torch.tensor(1.0))
            + torch.nn.functional.logsigmoid(torch.tensor(-1.0))
        )
        / 2
    )
    torch.testing.assert_close(loss, expected)
    assert accuracy.item() == 0.5
    margin_loss, _ = bradley_terry_loss(scores, margin=1.0)
    assert margin_loss > loss


def test_missing_labels_add_nothing_to_loss_or_gradient() -> None:
    predictions = torch.tensor([[1.0, 5.0], [2.0, 7.0]], requires_grad=True)
    labels = torch.tensor([[0.0, -100.0], [4.0, 3.0]])
    loss = masked_mse(predictions, labels)
    torch.testing.assert_close(loss, torch.tensor((1.0 + 4.0 + 16.0) / 3))
    loss.backward()
    assert predictions.grad[0, 1] == 0.0 and predictions.grad[0, 0] != 0.0
    with pytest.raises(ValueError, match="no labelled attribute"):
        masked_mse(predictions, torch.full((2, 2), -100.0))


def test_attribute_metadata_survives_save_and_load(tmp_path) -> None:
    backbone, tok = load_backbone(tiny_config())
    model = ScoringModel(backbone, 2, pooling="mean")
    meta = ScorerMeta(
        kind="attribute_model",
        names=["verbosity", "positivity"],
        pooling="mean",
        value_range=[0.0, 4.0],
        max_length=128,
        model={
            "name": "tiny",
            "source": "tiny",
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        },
    )
    save_scorer(model, tok, meta, tmp_path / "final")
    loaded, _, loaded_meta = load_scorer(tmp_path / "final")
    assert loaded_meta == meta
    ids = torch.randint(0, 250, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask), model.eval()(ids, mask))


def test_last_token_pooling_ignores_padding() -> None:
    backbone, _ = load_backbone(tiny_config())
    model = ScoringModel(backbone, 1).eval()
    ids = torch.randint(0, 250, (1, 7))
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 7, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(ids, torch.ones_like(ids)), model(padded, mask))


def test_reward_model_learns_a_separable_preference(tmp_path, tiny_train_cfg) -> None:
    data = write_separable_pairs(tmp_path / "pairs.jsonl")
    cfg = tiny_train_cfg(
        tmp_path,
        "method=reward_model",
        "data=hh-rlhf",
        f"data.path={data}",
        "data.max_records=null",
        "data.val_fraction=0.25",
        "trainer.max_steps=30",
        "method.lr=5e-3",
        "data.max_length=128",
    )
    run_dir = tmp_path / "rm"
    (run_dir / ".hydra").mkdir(parents=True)
    results = run(cfg, run_dir)
    assert results["eval"]["accuracy"] >= 0.9, results["eval"]
    assert results["eval"]["pairs"] == 24
    import csv

    with open(run_dir / "metrics.csv") as handle:
        losses = [float(r["train/loss"]) for r in csv.DictReader(handle) if r.get("train/loss")]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.2
    _, _, meta = load_scorer(run_dir)
    assert meta.kind == "reward_model" and meta.names == ["reward"]
    assert "pairwise accuracy" in (run_dir / "report.md").read_text()


def test_attribute_model_beats_mean_baseline_on_demo(tmp_path, tiny_train_cfg) -> None:
    cfg = tiny_train_cfg(
        tmp_path,
        "method=attribute_model",
        "data=demo",
        "data.max_records=160",
        "data.val_fraction=0.2",
        "trainer.max_steps=40",
        "method.lr=5e-3",
        "data.max_length=256",
        "method.attributes=[verbosity]",
    )
    run_dir = tmp_path / "apm"
    (run_dir / ".hydra").mkdir(parents=True)
    results = run(cfg, run_dir)
    (row,) = results["eval"]["attributes"]
    assert row["attribute"] == "verbosity"
    assert row["mse"] < row["baseline_mse"] and row["spearman"] > 0.5, row
    _, _, meta = load_scorer(run_dir)
    assert meta.names == ["verbosity"] and meta.value_range == [0.0, 4.0]
