"""Reward sources, stacking, registry, normalisers and the HF classifier wrapper (fast, offline)."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from steerable.backbone.tiny import build_tiny_tokenizer
from steerable.rewards import base
from steerable.rewards.base import RewardSource, RewardStack, build_reward_source, register_reward_type
from steerable.rewards.hf_classifier import HFSequenceClassifierReward
from steerable.rewards.normalize import BradleyTerryNormalizer, NormalizedReward, ZScoreNormalizer
from steerable.rewards.programmatic import (
    LengthScorer,
    ReadabilityScorer,
    SentimentScorer,
    count_sentences,
    count_syllables,
    flesch_kincaid_grade,
    flesch_reading_ease,
)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every scorer here must work offline: any socket connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted during a reward test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# ---------------------------------------------------------------- base contract


class _Echo(RewardSource):
    """Scores len(prompt), len(response); records whether autograd was on."""

    def __init__(self, shape_bug: bool = False) -> None:
        self.names = ["p_len", "r_len"]
        self.grad_enabled: bool | None = None
        self.shape_bug = shape_bug

    def _score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        self.grad_enabled = torch.is_grad_enabled()
        out = torch.tensor(
            [[len(p), len(r)] for p, r in zip(prompts, responses, strict=True)], dtype=torch.float64
        )
        return out[:, :1] if self.shape_bug else out


def test_score_contract_float32_no_grad() -> None:
    src = _Echo()
    out = src(["ab", "c"], ["xyz", ""])
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    assert out.tolist() == [[2.0, 3.0], [1.0, 0.0]]
    assert src.grad_enabled is False
    assert src.score([], []).shape == (0, 2)


def test_mismatched_lengths_raise_clear_error() -> None:
    with pytest.raises(ValueError, match=r"same length.*2 prompts and 1 responses"):
        _Echo().score(["a", "b"], ["x"])
    with pytest.raises(TypeError, match="list of strings"):
        _Echo().score("ab", "xy")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"responses\[1\] must be a str"):
        _Echo().score(["a", "b"], ["x", None])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="same length"):
        LengthScorer().score(["a"], ["x", "y"])


def test_wrong_output_shape_is_caught() -> None:
    with pytest.raises(RuntimeError, match=r"shape \(2, 1\), expected \(2, 2\)"):
        _Echo(shape_bug=True).score(["a", "b"], ["x", "y"])


# ---------------------------------------------------------------- length


def test_length_word_counts() -> None:
    out = LengthScorer().score(["p"] * 3, ["one two three", "", "  spaced   out\nwords\t here "])
    assert out.squeeze(1).tolist() == [3.0, 0.0, 4.0]


def test_length_token_counts_with_tokenizer() -> None:
    # The tiny tokenizer is byte-level: one token per UTF-8 byte, and "é" is two bytes.
    scorer = LengthScorer(unit="tokens", tokenizer=build_tiny_tokenizer())
    assert scorer.score(["p", "p", "p"], ["abc", "héllo", ""]).squeeze(1).tolist() == [3.0, 6.0, 0.0]
    with pytest.raises(ValueError, match="needs a tokenizer"):
        LengthScorer(unit="tokens")


def test_length_log_scale_and_target() -> None:
    responses = ["a b c", "a b c d e f g h", ""]
    log = LengthScorer(log_scale=True).score(["p"] * 3, responses).squeeze(1)
    assert torch.allclose(log, torch.tensor([math.log(4), math.log(9), 0.0]))
    close = LengthScorer(target=5).score(["p"] * 3, responses).squeeze(1)
    assert close.tolist() == [-2.0, -3.0, -5.0]
    close_log = LengthScorer(target=3, log_scale=True).score(["p"] * 2, responses[:2]).squeeze(1)
    assert torch.allclose(close_log, torch.tensor([0.0, -(math.log(9) - math.log(4))]))


def test_length_can_score_an_empty_reply_as_the_worst() -> None:
    """-log(1 + words) is best (0) for a reply that says nothing; `empty` gives such a reply its own score."""
    responses = ["a b c", "", "  \n "]
    concise = {"type": "length", "log_scale": True, "target": 0}
    plain = build_reward_source(concise).score(["p"] * 3, responses).squeeze(1)
    assert plain.tolist()[1:] == [0.0, 0.0] and plain[0] < 0
    guarded = build_reward_source({**concise, "empty": -5.0}).score(["p"] * 3, responses).squeeze(1)
    assert guarded.tolist()[1:] == [-5.0, -5.0] and guarded[0] == plain[0]


# ---------------------------------------------------------------- readability


@pytest.mark.parametrize(
    ("word", "syllables"),
    [
        ("the", 1),
        ("cat", 1),
        ("make", 1),  # silent final e
        ("table", 2),  # consonant + le is voiced
        ("free", 1),
        ("makes", 1),  # silent es
        ("boxes", 2),  # es after x is voiced
        ("jumped", 1),  # silent ed
        ("wanted", 2),  # ed after t is voiced
        ("beautiful", 3),  # eau-ti-ful
        ("reading", 2),
        ("wonderful", 3),
        ("don't", 1),
        ("2024", 1),
    ],
)
def test_syllable_heuristic(word: str, syllables: int) -> None:
    assert count_syllables(word) == syllables


def test_flesch_hand_computed() -> None:
    # "The cat sat on the mat.": 6 words, 1 sentence, 6 syllables.
    #   FRE  = 206.835 - 1.015*6 - 84.6*1 = 116.145
    #   FKGL = 0.39*6 + 11.8*1 - 15.59 = -1.45
    simple = "The cat sat on the mat."
    assert flesch_reading_ease(simple) == pytest.approx(116.145)
    assert flesch_kincaid_grade(simple) == pytest.approx(-1.45)
    # "Reading is wonderful. Cats sleep.": 5 words, 2 sentences,
    # syllables reading 2 + is 1 + wonderful 3 + cats 1 + sleep 1 = 8.
    #   FRE  = 206.835 - 1.015*(5/2) - 84.6*(8/5) = 206.835 - 2.5375 - 135.36 = 68.9375
    #   FKGL = 0.39*2.5 + 11.8*1.6 - 15.59 = 0.975 + 18.88 - 15.59 = 4.265
    two = "Reading is wonderful. Cats sleep."
    assert count_sentences(two) == 2
    assert flesch_reading_ease(two) == pytest.approx(68.9375)
    assert flesch_kincaid_grade(two) == pytest.approx(4.265)


def test_readability_scorer_columns_and_empty() -> None:
    scorer = ReadabilityScorer(metrics=["flesch_reading_ease", "flesch_kincaid_grade"], empty_value=-1.0)
    assert scorer.names == ["flesch_reading_ease", "flesch_kincaid_grade"]
    out = scorer.score(["p"] * 3, ["The cat sat on the mat.", "", " ... "])
    assert out[0].tolist() == pytest.approx([116.145, -1.45], abs=1e-4)
    assert out[1:].tolist() == [[-1.0, -1.0], [-1.0, -1.0]]
    with pytest.raises(ValueError, match="unknown readability"):
        ReadabilityScorer(metrics=["gunning_fog"])


# ---------------------------------------------------------------- sentiment


def test_vader_ordering_and_exact_value() -> None:
    scorer = SentimentScorer()
    pos, neu, neg, empty = scorer.score(
        ["p"] * 4,
        ["I love this, it is wonderful!", "The book is on the table.", "This is terrible and I hate it.", ""],
    ).squeeze(1)
    assert pos > neu > neg
    assert neu == 0.0 and empty == 0.0
    # VADER: "good" has lexicon valence 1.9 and nothing else in the sentence carries sentiment;
    # compound = x / sqrt(x^2 + 15) (alpha = 15), rounded to 4 places: 1.9 / sqrt(18.61) = 0.4404.
    expected = round(1.9 / math.sqrt(1.9**2 + 15), 4)
    assert expected == 0.4404
    assert scorer.score(["p"], ["The book was good."]).item() == pytest.approx(expected, abs=1e-7)


def test_vader_extra_outputs() -> None:
    scorer = SentimentScorer(outputs=["compound", "pos", "neg"])
    assert scorer.names == ["sentiment", "sentiment_pos", "sentiment_neg"]
    row = scorer.score(["p"], ["The book was bad."])[0].tolist()
    assert row == pytest.approx([round(-2.5 / math.sqrt(2.5**2 + 15), 4), 0.0, 0.538], abs=1e-6)


# ---------------------------------------------------------------- stack and registry


def test_stack_order_and_names() -> None:
    length, read, sent = (
        LengthScorer(),
        ReadabilityScorer(["flesch_reading_ease", "flesch_kincaid_grade"]),
        SentimentScorer(),
    )
    stack = RewardStack({"len": length, "read": read, "sent": sent})
    assert stack.names == ["len", "read/flesch_reading_ease", "read/flesch_kincaid_grade", "sent"]
    prompts, responses = ["p", "q"], ["The book was good.", "The cat sat on the mat."]
    out = stack(prompts, responses)
    expected = torch.cat(
        [length(prompts, responses), read(prompts, responses), sent(prompts, responses)], dim=1
    )
    assert torch.equal(out, expected)
    assert stack.index("sent") == 3 and stack.slices["read"] == slice(1, 3)
    reordered = RewardStack({"sent": sent, "len": length})
    assert reordered.names == ["sent", "len"]
    assert torch.equal(reordered(prompts, responses), expected[:, [3, 0]])
    with pytest.raises(KeyError, match="unknown reward"):
        stack.index("missing")


def test_build_from_spec_and_register(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    stack = build_reward_source(
        {
            "type": "stack",
            "sources": {
                "verbosity": {"type": "length", "log_scale": True},
                "positivity": {"type": "vader"},
            },
        }
    )
    assert isinstance(stack, RewardStack) and stack.names == ["verbosity", "positivity"]
    assert isinstance(stack.sources["verbosity"], LengthScorer) and stack.sources["verbosity"].log_scale

    register_reward_type("echo", lambda **kw: _Echo(**kw))
    assert isinstance(build_reward_source({"type": "echo"}), _Echo)
    with pytest.raises(ValueError, match="already registered"):
        register_reward_type("echo", _Echo)
    with pytest.raises(KeyError, match="unknown reward type 'nope'"):
        build_reward_source({"type": "nope"})
    with pytest.raises(KeyError, match="no 'type'"):
        build_reward_source({"log_scale": True})


def test_build_from_omegaconf() -> None:
    from omegaconf import OmegaConf

    spec = OmegaConf.create({"type": "readability", "metrics": ["flesch_kincaid_grade"]})
    assert build_reward_source(spec).names == ["flesch_kincaid_grade"]


# ---------------------------------------------------------------- normalisers


def test_zscore_frozen_statistics() -> None:
    norm = ZScoreNormalizer()
    with pytest.raises(RuntimeError, match="not fitted"):
        norm.transform(torch.zeros(2, 2))
    ref = torch.tensor([[1.0, 5.0], [3.0, 5.0]])  # column 0: mean 2, std 1; column 1: constant
    norm.fit(ref)
    new = torch.tensor([[10.0, 7.0], [2.0, 5.0], [0.0, 3.0]])
    expected = torch.tensor([[8.0, 2.0], [0.0, 0.0], [-2.0, -2.0]])  # old stats, constant column centred
    assert torch.equal(norm(new), expected)
    with pytest.raises(RuntimeError, match="already fitted"):
        norm.fit(new)
    assert torch.equal(norm(new), expected)  # the failed refit changed nothing

    restored = ZScoreNormalizer()
    restored.load_state_dict(norm.state_dict())
    assert torch.equal(restored(new), expected)
    with pytest.raises(ValueError, match="3 outputs"):
        norm(torch.zeros(1, 3))


def test_normalized_reward_zscore_uses_reference_stats() -> None:
    reward = NormalizedReward(LengthScorer(), ZScoreNormalizer())
    reward.fit(["p"] * 4, ["a", "a b", "a b c", "a b c d"])  # mean 2.5, std sqrt(1.25)
    out = reward.score(["p", "p"], ["a b c d e f", ""]).squeeze(1)
    std = math.sqrt(1.25)
    assert torch.allclose(out, torch.tensor([3.5 / std, -2.5 / std]))
    assert reward.names == ["length"]


def test_bradley_terry_against_reference() -> None:
    prompts = ["p1", "p2"]
    refs = ["one two", "one two three four"]
    reward = NormalizedReward(LengthScorer(), BradleyTerryNormalizer())
    reward.fit(prompts, refs)
    # Same response as the reference: P(y > y_ref) = sigma(0) = 0.5 exactly.
    assert reward.score(prompts, refs).squeeze(1).tolist() == [0.5, 0.5]
    # One word more than the reference: sigma(1); one fewer: sigma(-1); order of prompts irrelevant.
    out = reward.score(["p2", "p1"], ["a b c", "a b c"]).squeeze(1)
    assert torch.allclose(out, torch.sigmoid(torch.tensor([-1.0, 1.0])))
    with pytest.raises(KeyError, match="no cached reference"):
        reward.score(["unseen"], ["x"])

    restored = BradleyTerryNormalizer()
    restored.load_state_dict(reward.normalizer.state_dict())
    assert torch.equal(restored(torch.tensor([[3.0]]), ["p1"]), torch.sigmoid(torch.tensor([[1.0]])))


def test_bradley_terry_errors() -> None:
    norm = BradleyTerryNormalizer()
    with pytest.raises(RuntimeError, match="not fitted"):
        norm(torch.zeros(1, 1), ["p"])
    with pytest.raises(ValueError, match="two different reference scores"):
        norm.fit(["p", "p"], torch.tensor([[1.0], [2.0]]))
    norm.fit(["p", "p"], torch.tensor([[1.0], [1.0]]))
    assert norm.prompts == ["p"]
    with pytest.raises(ValueError, match="needs the prompts"):
        norm(torch.zeros(1, 1))


# ---------------------------------------------------------------- HF classifier


def _save_tiny_classifier(path: Path, num_labels: int, pad_in_config: bool) -> None:
    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id if pad_in_config else None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForSequenceClassification(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    assert (path / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def tiny_classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny_cls")
    _save_tiny_classifier(path, num_labels=3, pad_in_config=True)
    return path


PROMPTS = [
    "Hi",
    "Tell me a story about a dragon",
    "x",
    "Why?",
    "What is 2+2?",
    "Summarise: cats sleep a lot.",
]
RESPONSES = [
    "Hello there, friend.",
    "Once",
    "",
    "Because the sky scatters blue light more.",
    "4",
    "Cats nap.",
]


def test_hf_classifier_shapes_and_determinism(tiny_classifier_dir: Path) -> None:
    reward = HFSequenceClassifierReward(str(tiny_classifier_dir), batch_size=4)
    assert reward.names == ["LABEL_0", "LABEL_1", "LABEL_2"]
    out = reward(PROMPTS, RESPONSES)
    assert out.shape == (6, 3) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert torch.equal(out, reward(PROMPTS, RESPONSES))
    assert out.std(dim=0).min() > 0  # a real model output, not a constant

    one = HFSequenceClassifierReward(str(tiny_classifier_dir), label_index=1, names=["helpful"])
    assert one.names == ["helpful"]
    assert torch.allclose(one(PROMPTS, RESPONSES), out[:, [1]], atol=1e-5)

    probs = HFSequenceClassifierReward(str(tiny_classifier_dir), activation="softmax")(PROMPTS, RESPONSES)
    assert torch.allclose(probs, torch.softmax(out, dim=-1), atol=1e-5)


@pytest.mark.parametrize("prompt_format", ["concat", "pair", "chat"])
def test_hf_classifier_batching_invariance(tiny_classifier_dir: Path, prompt_format: str) -> None:
    # Varying lengths force padding inside the batches of 4; pooling must still read each real last token.
    single = HFSequenceClassifierReward(str(tiny_classifier_dir), batch_size=1, prompt_format=prompt_format)
    batched = HFSequenceClassifierReward(str(tiny_classifier_dir), batch_size=4, prompt_format=prompt_format)
    a, b = single(PROMPTS, RESPONSES), batched(PROMPTS, RESPONSES)
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_hf_classifier_sets_missing_pad_token_id(tmp_path: Path) -> None:
    _save_tiny_classifier(tmp_path, num_labels=1, pad_in_config=False)
    single = HFSequenceClassifierReward(str(tmp_path), batch_size=1)
    batched = HFSequenceClassifierReward(str(tmp_path), batch_size=4)
    assert batched.model.config.pad_token_id == batched.tokenizer.pad_token_id
    assert batched.names == ["score"]
    assert torch.allclose(single(PROMPTS, RESPONSES), batched(PROMPTS, RESPONSES), atol=1e-5)


def test_hf_classifier_from_spec_and_bad_label(tiny_classifier_dir: Path) -> None:
    reward = build_reward_source(
        {"type": "hf_classifier", "name_or_path": str(tiny_classifier_dir), "label_index": [2, 0]}
    )
    assert reward.names == ["LABEL_2", "LABEL_0"]
    with pytest.raises(ValueError, match="label_index"):
        HFSequenceClassifierReward(str(tiny_classifier_dir), label_index=3)
    with pytest.raises(ValueError, match="no tokens"):
        reward([""], [""])
