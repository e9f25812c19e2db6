"""Every loader turns its format into exact records, and every malformed input fails naming file:line and field.

Inline fixtures pin the exact output; the real files in ../shared/data (when present) pin the counts their
README states; the demo data's labels are checked against its own text.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest

from steerable.config.schema import DataConfig, DataFormat
from steerable.data.demo import (
    HELDOUT_TEMPLATES,
    NEGATIVE_WORDS,
    POSITIVE_WORDS,
    SENTENCES,
    TOPICS,
    demo_conversations,
    demo_prompts,
)
from steerable.data.formats.helpsteer2 import load_helpsteer2
from steerable.data.formats.hh_rlhf import load_hh_rlhf
from steerable.data.formats.jsonl import load_jsonl_conversations
from steerable.data.formats.oasst1 import load_oasst1
from steerable.data.formats.prompts import load_prompts
from steerable.data.formats.rows import Row, read_rows
from steerable.data.loaders import load_records, split_train_val
from steerable.data.records import Conversation, DataFormatError, PreferencePair, PromptRecord, Turn

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write_jsonl(path: Path, rows: list, gz: bool = False) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return path


def shared(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"shared data not available: {path} (only on the developers' machines)")
    return path


# ------------------------------------------------------------------------------------------------ readers


def test_read_jsonl_keeps_file_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n"just a string"\n{"a": 2}\n')
    assert read_rows(path) == [Row(1, {"a": 1}), Row(3, "just a string"), Row(4, {"a": 2})]


def test_read_gzip_jsonl_and_json_array(tmp_path: Path) -> None:
    gz = write_jsonl(tmp_path / "rows.jsonl.gz", [{"a": 1}, {"b": [2]}], gz=True)
    assert read_rows(gz) == [Row(1, {"a": 1}), Row(2, {"b": [2]})]
    array = tmp_path / "rows.json"
    array.write_text('[\n  {"a": 1},\n  {"a": 2,\n   "b": 3}\n]\n')
    assert read_rows(array) == [Row(2, {"a": 1}), Row(3, {"a": 2, "b": 3})]
    lines_as_json = write_jsonl(tmp_path / "lines.json", [{"a": 1}])  # a .json file holding JSON Lines
    assert read_rows(lines_as_json) == [Row(1, {"a": 1})]


def test_read_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"prompt": ["p1", "p2"], "response": ["r1", "r2"]}), path)
    assert read_rows(path) == [
        Row(1, {"prompt": "p1", "response": "r1"}),
        Row(2, {"prompt": "p2", "response": "r2"}),
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.parquet"]  # no cache left beside the file


@pytest.mark.parametrize("gz", [False, True])
def test_malformed_jsonl_line_names_file_and_line(tmp_path: Path, gz: bool) -> None:
    path = tmp_path / ("file.jsonl.gz" if gz else "file.jsonl")
    text = (
        '{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": "d"}\n{"prompt": "e", "response": \n'
    )
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    with pytest.raises(DataFormatError, match="invalid JSON") as err:
        read_rows(path)
    assert f"{path.name}:3" in str(err.value) and err.value.line == 3


def test_malformed_json_array_and_bad_bytes_name_the_line(tmp_path: Path) -> None:
    array = tmp_path / "file.json"
    array.write_text('[\n  {"a": 1},\n  {"a": }\n]')
    with pytest.raises(DataFormatError, match=r"file\.json:3: invalid JSON"):
        read_rows(array)
    binary = tmp_path / "file.jsonl"
    binary.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    with pytest.raises(DataFormatError, match=r"file\.jsonl:2: not UTF-8"):
        read_rows(binary)


def test_unsupported_or_missing_file(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(DataFormatError, match="unsupported file type"):
        read_rows(tmp_path / "data.csv")
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        read_rows(tmp_path / "nope.jsonl")


# ------------------------------------------------------------------------------------------------ OASST1


def oasst(mid: str, parent: str | None, role: str, text: str, labels: dict | None = None, **extra) -> dict:
    row = {
        "message_id": mid,
        "parent_id": parent,
        "role": role,
        "text": text,
        "message_tree_id": extra.pop("tree", "t1"),
        "deleted": False,
        "review_result": True,
        "lang": "en",
        "labels": None,
    }
    if labels:
        row["labels"] = {"name": list(labels), "value": list(labels.values()), "count": [3] * len(labels)}
    return {**row, **extra}


OASST_TREE = [
    oasst("p1", None, "prompter", "How do tides work?", {"quality": 0.9}),
    oasst(
        "a1",
        "p1",
        "assistant",
        "The moon pulls the sea.",
        {"quality": 0.7, "humor": 0.3, "toxicity": 0.0, "creativity": 1.0},
    ),
    oasst("a2", "p1", "assistant", "Gravity.", {"quality": 0.2}),
    oasst("a3", "p1", "assistant", "Deleted reply.", deleted=True),
    oasst("p2", "a1", "prompter", "And the sun?"),
    oasst("p3", "a1", "prompter", "Unanswered follow-up."),
    oasst("a4", "p2", "assistant", "It pulls too, less strongly."),
    oasst("a5", "p2", "assistant", "Failed review.", review_result=False),
    oasst("p4", "a5", "prompter", "Reply to a dropped message."),
    oasst("a6", "p4", "assistant", "Also dropped."),
    oasst("q1", None, "prompter", "Name a colour.", tree="t2"),
    oasst("b1", "q1", "assistant", "Blue.", {"quality": 1.0}, tree="t2"),
]


def test_oasst_threads_and_label_mapping() -> None:
    conversations = load_oasst1(OASST_TREE, "oasst.jsonl")
    assert conversations == [
        Conversation(
            turns=[
                Turn("user", "How do tides work?"),  # prompter labels are not attributes
                Turn(
                    "assistant",
                    "The moon pulls the sea.",
                    {"quality": 3.0, "humor": 1.0, "toxicity": 0.0, "creativity": 4.0},
                ),
                Turn("user", "And the sun?"),
                Turn("assistant", "It pulls too, less strongly."),
            ],
            id="a4",
            source="oasst.jsonl",
            group="t1",
        ),
        Conversation(
            [Turn("user", "How do tides work?"), Turn("assistant", "Gravity.", {"quality": 1.0})],
            id="a2",
            source="oasst.jsonl",
            group="t1",
        ),
        Conversation(
            [Turn("user", "Name a colour."), Turn("assistant", "Blue.", {"quality": 4.0})],
            id="b1",
            source="oasst.jsonl",
            group="t2",
        ),
    ]


def test_oasst_missing_parent_names_line_and_field() -> None:
    rows = [*OASST_TREE[:3], oasst("x", "ghost", "assistant", "orphan")]
    with pytest.raises(DataFormatError, match=r"oasst\.jsonl:4: field 'parent_id': parent message 'ghost'"):
        load_oasst1(rows, "oasst.jsonl")


def test_oasst_missing_field_names_it(tmp_path: Path) -> None:
    rows = [OASST_TREE[0], {k: v for k, v in OASST_TREE[1].items() if k != "text"}]
    path = write_jsonl(tmp_path / "oasst.jsonl", rows)
    with pytest.raises(DataFormatError, match=r"oasst\.jsonl:2: field 'text': missing"):
        load_oasst1(read_rows(path), str(path))


# ----------------------------------------------------------------------------------------------- HH-RLHF

TWO_ASSISTANT_TURNS = (
    "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a fact.\n\nAssistant:"
)


def test_hh_splits_at_last_assistant_turn() -> None:
    rows = [
        {"chosen": TWO_ASSISTANT_TURNS + " Honey never spoils.", "rejected": TWO_ASSISTANT_TURNS + "  No."},
        {
            "chosen": "\n\nHuman: a\n\nAssistant: b\n\nAssistant: c\n\nHuman: d\n\nAssistant: e",
            "rejected": "\n\nHuman: a\n\nAssistant: b\n\nAssistant: c\n\nHuman: d\n\nAssistant: f",
        },
    ]
    assert load_hh_rlhf(rows, "hh.jsonl") == [
        PreferencePair(
            context=[
                Turn("user", "Hi there"),
                Turn("assistant", "Hello! How can I help?"),
                Turn("user", "Tell me a fact."),
            ],
            chosen="Honey never spoils.",
            rejected=" No.",
            id="1",
            source="hh.jsonl",
        ),
        PreferencePair(  # a speaker repeated back to back is merged into one turn
            context=[Turn("user", "a"), Turn("assistant", "b\n\nc"), Turn("user", "d")],
            chosen="e",
            rejected="f",
            id="2",
            source="hh.jsonl",
        ),
    ]


def test_hh_prefix_mismatch_raises_or_skips(tmp_path: Path) -> None:
    good = {"chosen": TWO_ASSISTANT_TURNS + " A.", "rejected": TWO_ASSISTANT_TURNS + " B."}
    bad = {"chosen": TWO_ASSISTANT_TURNS + " A.", "rejected": "\n\nHuman: Other\n\nAssistant: B."}
    path = write_jsonl(tmp_path / "hh.jsonl", [good, bad])
    with pytest.raises(DataFormatError, match=r"hh\.jsonl:2: field 'rejected': the conversation before"):
        load_hh_rlhf(read_rows(path), str(path))
    assert [p.chosen for p in load_hh_rlhf(read_rows(path), str(path), strict=False)] == ["A."]


def test_hh_missing_field_or_marker_names_them() -> None:
    with pytest.raises(DataFormatError, match=r"hh:2: field 'rejected': missing"):
        load_hh_rlhf(
            [
                {"chosen": TWO_ASSISTANT_TURNS, "rejected": TWO_ASSISTANT_TURNS},
                {"chosen": TWO_ASSISTANT_TURNS},
            ],
            "hh",
        )
    with pytest.raises(DataFormatError, match=r"hh:1: field 'chosen': no .*Assistant"):
        load_hh_rlhf([{"chosen": "\n\nHuman: hi", "rejected": TWO_ASSISTANT_TURNS}], "hh")


# -------------------------------------------------------------------------------------------- HelpSteer2

NEMO_TEXT = (
    "<extra_id_0>System\nA chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions.\n<extra_id_1>User\nWhat is 2+2?\n"
    "<extra_id_1>Assistant\nIt is 4.\n\nSimple.\n<extra_id_2>"
)


def test_helpsteer2_hf_rows() -> None:
    rows = [
        {
            "prompt": "Say hi",
            "response": "Hi!",
            "helpfulness": 4,
            "correctness": 3,
            "coherence": 4,
            "complexity": 0,
            "verbosity": 1,
        },
        {"prompt": "Q1\n<extra_id_1>Assistant\nA1\n<extra_id_1>User\nQ2", "response": "A2", "helpfulness": 2},
    ]
    first, second = load_helpsteer2(rows, "hs")
    assert first.turns == [
        Turn("user", "Say hi"),
        Turn(
            "assistant",
            "Hi!",
            {"helpfulness": 4.0, "correctness": 3.0, "coherence": 4.0, "complexity": 0.0, "verbosity": 1.0},
        ),
    ]
    assert second.turns == [
        Turn("user", "Q1"),
        Turn("assistant", "A1"),
        Turn("user", "Q2"),
        Turn("assistant", "A2", {"helpfulness": 2.0}),
    ]


def test_helpsteer2_nemo_regression_rows() -> None:
    rows = [
        {"text": NEMO_TEXT, "label": [-100, -100, -100, -100, 4, 3, 4, 1, 0]},
        {"text": NEMO_TEXT.replace("It is 4.", "Four."), "label": [2, -100, -100, -100, 1, 1, 2, 0, 0]},
    ]
    first, second = load_helpsteer2(rows, "rm.jsonl")
    assert first == Conversation(
        turns=[
            Turn("user", "What is 2+2?"),
            Turn(
                "assistant",
                "It is 4.\n\nSimple.",
                {
                    "helpfulness": 4.0,
                    "correctness": 3.0,
                    "coherence": 4.0,
                    "complexity": 1.0,
                    "verbosity": 0.0,
                },
            ),
        ],
        id="1",
        source="rm.jsonl",
        group=first.group,
    )
    assert second.turns[-1].attributes["quality"] == 2.0 and "toxicity" not in second.turns[-1].attributes
    assert first.group == second.group  # two replies to one prompt stay on one side of a split
    with pytest.raises(DataFormatError, match=r"rm\.jsonl:1: field 'label': expected a list of 9"):
        load_helpsteer2([{"text": NEMO_TEXT, "label": [1, 2]}], "rm.jsonl")
    with pytest.raises(DataFormatError, match=r"hs:1: field 'response': missing"):
        load_helpsteer2([{"prompt": "x"}], "hs")


# ----------------------------------------------------------------------------------------------- prompts


def test_prompt_shapes() -> None:
    rows = [
        {
            "question_id": 81,
            "category": "writing",
            "turns": ["Write a poem.", "Shorter."],
            "reference": ["Roses."],
        },
        {
            "id": "seed_task_1",
            "instruction": "Relate the pair.",
            "instances": [{"input": "Night : Day", "output": "Opposites."}],
        },
        {
            "id": "seed_task_2",
            "instruction": "Tell a joke.",
            "instances": [{"input": "", "output": "Knock knock."}],
        },
        "What is a 401k?",
        oasst("r1", None, "prompter", "Root prompt", replies=[]),
        oasst("r2", "r1", "assistant", "A reply is not a prompt"),
        {"prompt": "Plain prompt", "category": "misc"},
    ]
    assert load_prompts(rows, "p") == [
        PromptRecord(
            [{"role": "user", "content": "Write a poem."}], id="81", category="writing", reference="Roses."
        ),
        PromptRecord(
            [{"role": "user", "content": "Relate the pair.\n\nNight : Day"}],
            id="seed_task_1",
            reference="Opposites.",
        ),
        PromptRecord(
            [{"role": "user", "content": "Tell a joke."}], id="seed_task_2", reference="Knock knock."
        ),
        PromptRecord([{"role": "user", "content": "What is a 401k?"}], id="4"),
        PromptRecord([{"role": "user", "content": "Root prompt"}], id="r1"),
        PromptRecord([{"role": "user", "content": "Plain prompt"}], id="7", category="misc"),
    ]


def test_unknown_prompt_shape_names_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "prompts.jsonl", ["ok", {"question": "?"}])
    with pytest.raises(DataFormatError, match=r"prompts\.jsonl:2: unknown prompt shape"):
        load_prompts(read_rows(path), str(path))


# ------------------------------------------------------------------------------------------ generic JSONL


def test_jsonl_chat_lists_and_prompt_response_rows() -> None:
    rows = [
        {
            "id": "c1",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello", "attributes": {"humor": 2}},
            ],
        },
        {"q": "2+2?", "a": "4", "attributes": {"verbosity": 0, "humor": None}},
    ]
    assert load_jsonl_conversations(rows, "c.jsonl", "messages", "q", "a") == [
        Conversation(
            [Turn("system", "Be brief."), Turn("user", "Hi"), Turn("assistant", "Hello", {"humor": 2.0})],
            id="c1",
            source="c.jsonl",
        ),
        Conversation(
            [Turn("user", "2+2?"), Turn("assistant", "4", {"verbosity": 0.0})], id="2", source="c.jsonl"
        ),
    ]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "only a prompt"}, r"c\.jsonl:1: field 'response': missing"),
        ({"other": 1}, r"c\.jsonl:1: field 'messages': missing"),
        ({"messages": [{"role": "bot", "content": "x"}]}, r"field 'messages\[0\]\.role': expected one of"),
        (
            {"messages": [{"role": "user", "content": 3}]},
            r"field 'messages\[0\]\.content': expected a string",
        ),
        ({"messages": [{"role": "user", "content": "x"}]}, r"field 'messages': no assistant turn"),
        (
            {"prompt": "p", "response": "r", "attributes": {"humor": "high"}},
            r"field 'attributes\.humor': expected a number",
        ),
    ],
)
def test_jsonl_bad_rows_name_line_and_field(row: dict, message: str) -> None:
    with pytest.raises(DataFormatError, match=message):
        load_jsonl_conversations([row], "c.jsonl")


# ------------------------------------------------------------------------------------------ load_records


def test_load_records_reads_path_filters_attributes_and_caps(tmp_path: Path) -> None:
    rows = [
        {"prompt": f"p{i}", "response": f"r{i}", "attributes": {"humor": i % 5, "verbosity": 1}}
        for i in range(6)
    ]
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    cfg = DataConfig(
        name="jsonl", format=DataFormat["jsonl"], path=str(path), attributes=["humor"], max_records=4
    )
    records = load_records(cfg)
    assert [r.id for r in records] == ["1", "2", "3", "4"]
    assert [r.last_assistant.attributes for r in records] == [
        {"humor": 0.0},
        {"humor": 1.0},
        {"humor": 2.0},
        {"humor": 3.0},
    ]
    cfg = DataConfig(name="jsonl", format=DataFormat["jsonl"], path=str(path), attributes=["humour"])
    with pytest.raises(DataFormatError, match=r"field 'attributes': \['humour'\] not found"):
        load_records(cfg)


def test_load_records_demo() -> None:
    records = load_records(DataConfig(name="demo", max_records=48))
    assert len(records) == 48 and records == demo_conversations(48)


# ------------------------------------------------------------------------------------------------- split


def test_split_is_deterministic_and_keeps_groups_together() -> None:
    records = [Conversation([Turn("user", str(i))], id=str(i), group=f"tree{i // 4}") for i in range(40)]
    train, val = split_train_val(records, 0.25, seed=7)
    assert (train, val) == split_train_val(records, 0.25, seed=7)
    assert len(val) == 12 and len(train) + len(val) == 40  # whole trees of 4 until val holds >= 10
    assert not {r.group for r in train} & {r.group for r in val}
    assert train == [r for r in records if r in train]  # input order kept
    assert split_train_val(records, 0.0, seed=7) == (records, [])


def test_split_ungrouped_records_and_oasst_trees() -> None:
    pairs = [PreferencePair([Turn("user", "q")], "a", "b", id=str(i)) for i in range(20)]
    train, val = split_train_val(pairs, 0.1, seed=1)
    assert len(val) == 2 and len(train) == 18
    assert split_train_val(pairs, 0.1, seed=2) != (train, val)
    train, val = split_train_val(load_oasst1(OASST_TREE, "o"), 0.5, seed=0)
    assert train and val and not {c.group for c in train} & {c.group for c in val}


# -------------------------------------------------------------------------------------------------- demo


def sentence_count(text: str) -> int:
    return len(re.findall(r"[.!?](?:\s|$)", text))


def sentiment_per_sentence(text: str) -> float:
    words = re.findall(r"[a-z]+", text.lower())
    return (
        sum(w in POSITIVE_WORDS for w in words) - sum(w in NEGATIVE_WORDS for w in words)
    ) / sentence_count(text)


def test_demo_is_deterministic_and_balanced() -> None:
    data = demo_conversations()
    assert (
        len(data) == 300
        and data == demo_conversations(300, seed=0)
        and data != demo_conversations(300, seed=1)
    )
    assert len({c.turns[0].content for c in data}) == 300
    levels = Counter((c.turns[1].attributes["verbosity"], c.turns[1].attributes["positivity"]) for c in data)
    assert len(levels) == 25 and set(levels.values()) == {12}


def test_demo_labels_match_the_text() -> None:
    by_verbosity: dict[float, set[int]] = {}
    by_positivity: dict[float, list[float]] = {}
    for conversation in demo_conversations():
        reply = conversation.last_assistant
        by_verbosity.setdefault(reply.attributes["verbosity"], set()).add(sentence_count(reply.content))
        by_positivity.setdefault(reply.attributes["positivity"], []).append(
            sentiment_per_sentence(reply.content)
        )
    assert [by_verbosity[v] for v in sorted(by_verbosity)] == [{n} for n in SENTENCES]
    ranges = [(min(by_positivity[p]), max(by_positivity[p])) for p in sorted(by_positivity)]
    assert ranges[2] == (0.0, 0.0)
    assert all(high < low for (_, high), (low, _) in pairwise(ranges))  # no overlap


def test_demo_prompts_are_held_out() -> None:
    available = len(HELDOUT_TEMPLATES) * len(TOPICS)
    prompts = demo_prompts(available, seed=0)
    assert prompts[:5] == demo_prompts(5, seed=0)
    assert len({p.text for p in prompts}) == available
    assert not {p.text for p in prompts} & {c.turns[0].content for c in demo_conversations()}
    with pytest.raises(ValueError, match="held-out prompts"):
        demo_prompts(available + 1)


# ------------------------------------------------------------------------------------------- shared data


@pytest.mark.shared_data
def test_shared_oasst1() -> None:
    path = shared("oasst1/oasst1-en-validation.jsonl")
    rows = read_rows(path)
    assert len(rows) == 2022 and len({r.value["message_tree_id"] for r in rows}) == 191
    conversations = load_oasst1(rows, str(path))
    # 3 of the 191 trees are single replies whose parent is not in the file; all 3 failed review and are dropped
    assert len(conversations) == 901 and len({c.group for c in conversations}) == 188
    assert all(c.turns[0].role == "user" and c.turns[-1].role == "assistant" for c in conversations)
    values = {v for c in conversations for t in c.turns for v in t.attributes.values()}
    assert values <= {0.0, 1.0, 2.0, 3.0, 4.0}
    train, val = split_train_val(conversations, 0.05, seed=1234)
    assert len(val) >= 45 and not {c.group for c in train} & {c.group for c in val}


@pytest.mark.shared_data
def test_shared_hh_rlhf() -> None:
    path = shared("hh-rlhf/harmless-base-test.jsonl.gz")
    rows = read_rows(path)
    assert len(rows) == 2312
    with pytest.raises(DataFormatError, match=r"harmless-base-test\.jsonl\.gz:1255: field 'rejected'"):
        load_hh_rlhf(rows, str(path))
    pairs = load_hh_rlhf(rows, str(path), strict=False)  # 5 pairs have a reply with "Human:" run into it
    assert len(pairs) == 2307
    assert all(p.context[0].role == "user" and p.context[-1].role == "user" for p in pairs)
    cfg = DataConfig(name="hh-rlhf", format=DataFormat["hh-rlhf"], path=str(path))
    assert len(load_records(cfg)) == 2307


@pytest.mark.shared_data
def test_shared_helpsteer2_fixture() -> None:
    path = shared("helpsteer2-fixture/test-rm.jsonl")
    conversations = load_helpsteer2(read_rows(path), str(path))
    assert len(conversations) == 8 and len({c.group for c in conversations}) == 4
    first = conversations[0]
    assert [t.role for t in first.turns] == ["user", "assistant"]
    assert first.turns[0].content == "explain master slave replication nsql"
    assert first.turns[1].content.startswith("In the context of NoSQL databases")
    assert first.turns[1].attributes == {
        "helpfulness": 4.0,
        "correctness": 4.0,
        "coherence": 4.0,
        "complexity": 3.0,
        "verbosity": 2.0,
    }
    assert not any("<extra_id" in t.content for c in conversations for t in c.turns)


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("relative", "count"),
    [
        ("prompts/mt_bench/question.jsonl", 80),
        ("prompts/vicuna_bench/question.jsonl", 80),
        ("prompts/self-instruct/seed_tasks.jsonl", 175),
        ("prompts/open-assistant/en_100_text.jsonl", 100),
        ("prompts/open-assistant/prompt_lottery_en_250_text.jsonl", 250),
        ("prompts/open-assistant/en_100_message.jsonl", 100),
    ],
)
def test_shared_prompt_files(relative: str, count: int) -> None:
    path = shared(relative)
    prompts = load_prompts(read_rows(path), str(path))
    assert len(prompts) == count and all(p.text.strip() for p in prompts)
    assert len({p.id for p in prompts}) == count
