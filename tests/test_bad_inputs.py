"""A battery of bad inputs through the real command-line entry points (in-process, so it stays fast): each must
exit non-zero with one short message naming the key or path, print no traceback, and leave nothing that looks
like a finished run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

TINY = ["model=tiny", "data=demo", "hardware=cpu", "logger=csv", "debug=fast"]

TRAIN_CASES = [
    # unknown keys and wrong types or choices (Hydra's composition error names the key)
    (["method.lrr=1"], "method.lrr"),
    (["trainer.max_stepz=3"], "trainer.max_stepz"),
    (["method.lr=fast"], "method.lr"),
    (["hardware.precision=bf17"], "hardware.precision"),
    (["hardware=tpu"], "hardware"),
    (["method=dpo"], "method"),
    (["model.lora.r=abc"], "model.lora.r"),
    (["data.too_long=cut"], "data.too_long"),
    # numeric ranges
    (["trainer.max_steps=0"], "trainer.max_steps"),
    (["trainer.checkpoint_every_n_steps=0"], "trainer.checkpoint_every_n_steps"),
    (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val"),
    (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches"),
    (["trainer.val_check_interval=0"], "trainer.val_check_interval"),
    (["trainer.limit_val_batches=-1"], "trainer.limit_val_batches"),
    (["trainer.max_epochs=0"], "trainer.max_epochs"),
    (["method.lr=0"], "method.lr"),
    (["method.lr=-0.001"], "method.lr"),
    (["method.warmup_steps=-5"], "method.warmup_steps"),
    (["method.weight_decay=-0.1"], "method.weight_decay"),
    (["method.batch_size=0"], "method.batch_size"),
    (["method.scheduler=exp"], "method.scheduler"),
    (["model.lora.r=0"], "model.lora.r"),
    (["model.lora.alpha=-16"], "model.lora.alpha"),
    (["model.lora.dropout=1.5"], "model.lora.dropout"),
    (["model.dtype=int8"], "model.dtype"),
    (["data.max_length=4"], "data.max_length"),
    (["data.val_fraction=1.5"], "data.val_fraction"),
    (["data.max_records=0"], "data.max_records"),
    (["data.half=third"], "data.half"),
    (["data.num_workers=-1"], "data.num_workers"),
    (["hardware.devices=0"], "hardware.devices"),
    (["hardware.torch_threads=0"], "hardware.torch_threads"),
    (["report.sampling.max_new_tokens=0"], "report.sampling.max_new_tokens"),
    (["report.sampling.top_p=0"], "report.sampling.top_p"),
    (["report.sampling.temperature=0"], "report.sampling.temperature"),
    (["report.sampling.top_k=0"], "report.sampling.top_k"),
    (
        ["method=clp", "reward=[verbosity,positivity]", "method.eval.sampling.top_p=2"],
        "method.eval.sampling.top_p",
    ),
    # a sampling key given flat, as before the keys were nested, names where it lives now
    (["report.max_new_tokens=8"], "report.max_new_tokens is now report.sampling.max_new_tokens"),
    (["method=superhf", "method.temperature=0.7"], "method.temperature is now method.sampling.temperature"),
    # cross-field rules
    (["hardware.precision=16-mixed"], "16-mixed"),
    (["hardware=deepspeed", "hardware.accelerator=cpu"], "hardware.strategy=deepspeed_stage_2"),
    (["method.stages=[train,bogus]"], "method.stages"),
    (["method.stages=[]"], "method.stages"),
    (["model=hf"], "model.name_or_path"),
    (["data=oasst1", "data.hub_id=null"], "data.path"),
    (["method=reward_model"], "preference pairs"),
    (["method=attribute_model", "data=hh-rlhf", "data.path=x.jsonl"], "attribute labels"),
    (["method=attribute_model", "method.value_range=[4,0]"], "method.value_range"),
    (["resume=/no/such/run"], "resume="),
    (["resume=/tmp"], "is not a run folder"),
    # method x reward rules, checked before any model loads
    (["method=pcm"], "reward=[verbosity,positivity]"),
    (["method=pcm", "reward=[verbosity]"], "['positivity'] missing"),
    (["method=superhf"], "method.reward is required"),
    (["method=superhf", "method.reward=verbosity"], "method.reward=verbosity is neither"),
    (["method=superhf", "reward=[positivity]", "method.reward=verbosity"], "['positivity']"),
]

EVAL_CASES = [
    ([], "run=<run folder> is required"),
    (["run=/no/such/run"], "does not exist"),
    (["run=/no/such/run", "eval=steerability"], "does not exist"),
    (["run=[/tmp,/no/such/run]", "eval=leaderboard"], "run=/no/such/run does not exist"),
]

GENERATE_CASES = [
    (["run=does/not/exist", "prompt=hi"], "does not exist"),
    (["run=/no/such/run", "prompt=hi", "attributes.quality=4"], "does not exist"),
]


def invoke(capsys, monkeypatch, tmp_path: Path, script: str, args: list[str]) -> tuple[int, str]:
    """Run `steerable-<script> args` in this process; (exit status, everything it printed)."""
    from importlib import import_module

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", [f"steerable-{script}", *args])
    GlobalHydra.instance().clear()
    code: object = 0  # a command that succeeds returns without SystemExit
    try:
        import_module(f"steerable.cli.{script}").main()
    except SystemExit as exited:
        code = exited.code
    GlobalHydra.instance().clear()
    out = capsys.readouterr()
    return (code if isinstance(code, int) else 1), out.out + out.err


def assert_clear_failure(code: int, printed: str, needle: str, tmp_path: Path) -> None:
    assert code != 0, printed
    assert needle in printed, printed[-2000:]
    assert "Traceback" not in printed, printed[-3000:]
    finished = list(tmp_path.rglob(".steerable/complete")) + list(tmp_path.rglob("adapter_model.safetensors"))
    assert not finished, finished


@pytest.mark.parametrize(("overrides", "needle"), TRAIN_CASES, ids=lambda v: str(v))
def test_bad_train_input_is_one_clear_error(capsys, monkeypatch, tmp_path, overrides, needle) -> None:
    code, printed = invoke(
        capsys, monkeypatch, tmp_path, "train", [*TINY, f"output_root={tmp_path}", *overrides]
    )
    assert_clear_failure(code, printed, needle, tmp_path)


@pytest.mark.parametrize(("args", "needle"), EVAL_CASES, ids=lambda v: str(v))
def test_bad_eval_input_is_one_clear_error(capsys, monkeypatch, tmp_path, args, needle) -> None:
    code, printed = invoke(capsys, monkeypatch, tmp_path, "eval", args)
    assert_clear_failure(code, printed, needle, tmp_path)
    assert not Path("/no/such/run").exists()  # a missing run gets no eval/ folder


@pytest.mark.parametrize(("args", "needle"), GENERATE_CASES, ids=lambda v: str(v))
def test_bad_generate_input_is_one_clear_error(capsys, monkeypatch, tmp_path, args, needle) -> None:
    code, printed = invoke(capsys, monkeypatch, tmp_path, "generate", args)
    assert_clear_failure(code, printed, needle, tmp_path)


def test_debug_fast_shrinks_an_evaluation() -> None:
    from steerable.cli.eval import shrunk_for_debug

    args = shrunk_for_debug(["run=x", "debug=fast", "eval.sampling.max_new_tokens=4"])
    assert "debug=fast" not in args and "eval.num_prompts=2" in args
    assert args.count("eval.sampling.max_new_tokens=4") == 1  # the user's wins
    assert "eval.sampling.max_new_tokens=8" not in args


def oasst_rows(label_value: float, reply: str = "Sure, here it is.") -> list[dict]:
    prompt = {
        "message_id": "p",
        "parent_id": None,
        "text": "Tell me a joke.",
        "role": "prompter",
        "lang": "en",
    }
    labels = {"name": ["quality"], "value": [label_value], "count": [3]}
    answer = {
        "message_id": "a",
        "parent_id": "p",
        "text": reply,
        "role": "assistant",
        "lang": "en",
        "labels": labels,
    }
    return [prompt, answer]


def helpsteer_rows(helpfulness: float) -> list[dict]:
    row = {"prompt": "Hi there", "response": "Hello! How can I help?", "helpfulness": helpfulness}
    return [{**row, **{k: 2 for k in ("correctness", "coherence", "complexity", "verbosity")}}]


DATA_CASES = [
    ("oasst1", oasst_rows(7.5), "field 'labels.value[0]': 7.5 is outside OASST's label scale"),
    ("oasst1", oasst_rows(-0.5), "outside OASST's label scale"),
    ("oasst1", oasst_rows(0.5, reply="   "), "field 'text': empty text"),
    ("helpsteer2", helpsteer_rows(99), "field 'helpfulness': 99 is outside HelpSteer2's attribute scale"),
    ("jsonl", [{"messages": "not a list"}], "data.jsonl:1"),
]


@pytest.mark.parametrize(("data", "rows", "needle"), DATA_CASES, ids=[c[2][:40] for c in DATA_CASES])
def test_bad_data_names_file_and_line(capsys, monkeypatch, tmp_path, data, rows, needle) -> None:
    import json

    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    method = ["method=attribute_model"] if data != "jsonl" else []
    args = [*TINY, *method, f"data={data}", f"data.path={path}", f"output_root={tmp_path / 'out'}"]
    code, printed = invoke(capsys, monkeypatch, tmp_path, "train", args)
    assert_clear_failure(code, printed, needle, tmp_path)
    assert f"{path}:" in printed  # file:line


# ------------------------------------------------------------------------------------------ paths and machines


def write_lines(path: Path, rows: list) -> Path:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def remote_code_model(folder: Path) -> Path:
    """A model folder whose config asks transformers to run code shipped with it (auto_map)."""
    import json

    folder.mkdir()
    config = {
        "model_type": "custom",
        "architectures": ["Custom"],
        "auto_map": {"AutoConfig": "x.CustomConfig"},
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "x.py").write_text("raise SystemExit('remote code ran')\n")
    return folder


def path_cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """Overrides and the expected message, built on files made in tmp_path."""
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "folder.jsonl").mkdir()
    (tmp_path / "a_file").write_text("not a folder")
    long_reply = "word " * 400
    dropped = write_lines(tmp_path / "all_dropped.jsonl", [{"prompt": "hi", "response": long_reply}] * 4)
    same = write_lines(tmp_path / "same.jsonl", [{"prompt": "hi", "chosen": "yes", "rejected": "yes"}] * 6)
    remote = remote_code_model(tmp_path / "remote_model")
    jsonl = ["data=jsonl", "data.prompt_field=prompt", "data.response_field=response"]
    return {
        "missing data file": (
            ["data=jsonl", f"data.path={tmp_path}/none.jsonl"],
            "none.jsonl does not exist",
        ),
        "empty data file": (["data=jsonl", f"data.path={tmp_path}/empty.jsonl"], "empty.jsonl is empty"),
        "data path is a folder": (
            ["data=jsonl", f"data.path={tmp_path}/folder.jsonl"],
            "folder.jsonl is a folder",
        ),
        "every row dropped": (
            [*jsonl, f"data.path={dropped}", "data.max_length=32", "data.too_long=drop"],
            "all_dropped.jsonl",
        ),
        "DPO pairs all identical": (
            ["method=dpo", "data=jsonl", f"data.path={same}"],
            "same.jsonl",
        ),
        "GPU strategy on a CPU machine": (["hardware=ddp"], "hardware"),
        "GPU accelerator on a CPU machine": (["hardware=gpu"], "hardware.accelerator=gpu"),
        "output folder under a file": ([f"output_root={tmp_path}/a_file/runs"], "a_file"),
        "model folder asking for remote code": (
            ["model=hf", f"model.name_or_path={remote}"],
            "remote code",
        ),
    }


PATH_CASE_NAMES = [
    "missing data file",
    "empty data file",
    "data path is a folder",
    "every row dropped",
    "DPO pairs all identical",
    "GPU strategy on a CPU machine",
    "GPU accelerator on a CPU machine",
    "output folder under a file",
    "model folder asking for remote code",
]


@pytest.mark.parametrize("case", PATH_CASE_NAMES)
def test_bad_paths_and_machines_are_one_clear_error(capsys, monkeypatch, tmp_path, case) -> None:
    import torch

    if "GPU" in case and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    overrides, needle = path_cases(tmp_path)[case]
    before = tree_hashes(tmp_path)
    args = [*TINY, f"output_root={tmp_path / 'out'}", *overrides]
    code, printed = invoke(capsys, monkeypatch, tmp_path, "train", args)
    assert_clear_failure(code, printed, needle, tmp_path)
    errors = [line for line in printed.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], printed  # one line says what and where
    after = tree_hashes(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing changed or deleted


def test_an_optuna_sweep_with_no_trials_is_one_clear_error(capsys, monkeypatch, tmp_path) -> None:
    args = ["-m", *TINY, "hparams_search=optuna", "hydra.sweeper.n_trials=0", f"output_root={tmp_path}"]
    code, printed = invoke(capsys, monkeypatch, tmp_path, "train", args)
    assert_clear_failure(code, printed, "hydra.sweeper.n_trials=0", tmp_path)
    assert not list(tmp_path.iterdir())  # no sweep folder, no study database


def tree_hashes(root: Path) -> dict[str, str]:
    """Every file under `root` (symlinks as their target text) by its relative path, with a SHA-256."""
    import hashlib
    import os

    hashes = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            hashes[str(path.relative_to(root))] = "-> " + os.readlink(path)
        elif path.is_file():
            hashes[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            hashes[str(path.relative_to(root)) + "/"] = "dir"
    return hashes


# ------------------------------------------------------------------------------------------------- serve

GOOD = {"prompt": "Any tips for running?"}
BIG_PROMPT = "run " * 300  # about 300 tokens: under limits.body_bytes below, over limits.prompt_tokens

SERVE_CASES = [
    # (request body: a dict sent as JSON, or raw bytes; status; the message must contain)
    (
        {**GOOD, "settings": {"max_new_tokens": "abc"}},
        400,
        "settings.max_new_tokens: Input should be a valid integer",
    ),
    (
        {**GOOD, "settings": {"max_new_tokens": "5"}},
        400,
        "settings.max_new_tokens: Input should be a valid integer",
    ),
    ({**GOOD, "settings": {"max_new_tokens": 2.5}}, 400, "settings.max_new_tokens"),
    (
        {**GOOD, "settings": {"max_new_tokens": 0}},
        400,
        "settings.max_new_tokens: Input should be greater than or equal to 1",
    ),
    ({**GOOD, "settings": {"max_new_tokens": 17}}, 400, "over the limit limits.max_new_tokens=16"),
    ({**GOOD, "settings": {"max_new_tokens": 10**12}}, 400, "limits.max_new_tokens=16"),
    ({**GOOD, "settings": {"temperature": -1}}, 400, "settings.temperature: Input should be greater than 0"),
    ({**GOOD, "settings": {"temperature": "hot"}}, 400, "settings.temperature"),
    ({**GOOD, "settings": {"top_p": 1.5}}, 400, "settings.top_p: Input should be less than or equal to 1"),
    ({**GOOD, "settings": {"top_k": 0}}, 400, "settings.top_k"),
    ({**GOOD, "settings": {"do_sample": "yes"}}, 400, "settings.do_sample: Input should be a valid boolean"),
    ({**GOOD, "settings": {"seed": 1.5}}, 400, "settings.seed"),
    ({**GOOD, "settings": {"num_return_sequences": 4}}, 400, "settings.num_return_sequences: unknown field"),
    ({**GOOD, "settings": [1, 2]}, 400, "settings: Input should be a valid dictionary"),
    ({**GOOD, "controls": [1]}, 400, "controls: Input should be a valid dictionary"),
    ({**GOOD, "controls": {"attributes.verbosity": 9}}, 400, "attributes.verbosity=9"),
    ({**GOOD, "controls": {"attributes.humor": 1}}, 400, "humor"),
    ({**GOOD, "system": 5}, 400, "system: Input should be a valid string"),
    ({**GOOD, "stream": True}, 400, "stream: unknown field"),
    ({"prompt": 123}, 400, "prompt: Input should be a valid string"),
    ({"prompt": ""}, 400, "prompt: String should have at least 1 character"),
    ({"prompt": " \n\t"}, 400, "prompt: Value error, the prompt is only whitespace"),
    ({"controls": {}}, 400, "prompt: Field required"),
    ({"prompt": BIG_PROMPT}, 413, "over the limit limits.prompt_tokens=64"),
    ({"prompt": "x" * 5000}, 413, "over the limit limits.body_bytes=4096"),
    (b"not json", 400, "the body is not JSON"),
    (b'{"prompt": "hi"', 400, "the body is not JSON"),
    (b"\xff\xfe\x00", 400, "the body is not JSON"),
    (b"[1, 2]", 400, "the body: Input should be a valid dictionary"),
    (b"null", 400, "the body: Input should be a valid dictionary"),
]


@pytest.fixture(scope="module")
def strict_server(steerlm_run):
    """A server with small limits, counting forward passes of its network (bad input must cause none)."""
    from steerable.config.schema import ServeLimits
    from steerable.generation import GenerationSettings
    from steerable.methods.registry import load_policy
    from steerable.serve.app import Server
    from steerable.serve.jobs import input_embeddings

    limits = ServeLimits(body_bytes=4096, prompt_tokens=64, max_new_tokens=16, deadline_s=30, queue=1)
    server = Server(load_policy(steerlm_run), GenerationSettings(max_new_tokens=4, seed=5), limits=limits)
    server.forward_calls = 0

    def count(*_) -> None:
        server.forward_calls += 1

    for embedding in input_embeddings(server.policy.model):
        embedding.register_forward_pre_hook(count)
    return server


@pytest.fixture(scope="module")
def strict_client(strict_server):
    from fastapi.testclient import TestClient

    from steerable.serve.app import build_app

    return TestClient(build_app(strict_server), raise_server_exceptions=False)


@pytest.mark.parametrize(("body", "status", "needle"), SERVE_CASES, ids=[c[2][:50] for c in SERVE_CASES])
@pytest.mark.parametrize("route", ["/generate", "/stream"])
def test_bad_serve_requests_are_4xx_naming_the_field_before_the_model_runs(
    strict_server, strict_client, steerlm_run, body, status, needle, route
) -> None:
    before = tree_hashes(steerlm_run)
    calls = strict_server.forward_calls
    sent = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = strict_client.post(route, **sent)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert needle in error and "\n" not in error and "Traceback" not in error, error
    assert strict_server.forward_calls == calls  # refused before the model was touched
    assert tree_hashes(steerlm_run) == before
    assert strict_client.post(route, json=GOOD).status_code == 200  # and the server still answers
    assert strict_server.forward_calls > calls  # (which the counter sees)


def test_a_declared_oversized_body_is_refused_unread(strict_client) -> None:
    response = strict_client.post("/generate", content=b"{}", headers={"content-length": str(10**9)})
    assert response.status_code == 413 and "limits.body_bytes=4096" in response.json()["error"]


def test_a_full_queue_is_503_with_retry_after(strict_server, strict_client) -> None:
    from steerable.serve.app import QueueFull

    pending = strict_server.worker.pending
    fillers = [object() for _ in range(strict_server.worker.capacity)]
    pending.update(fillers)  # the queue as a burst of requests leaves it: full
    try:
        response = strict_client.post("/generate", json=GOOD)
    finally:
        pending.difference_update(fillers)
    assert response.status_code == 503 and "limits.queue" in response.json()["error"]
    assert int(response.headers["retry-after"]) >= 1
    assert QueueFull(3).retry_after == 3
    assert strict_client.post("/generate", json=GOOD).status_code == 200


def test_a_generation_past_its_deadline_is_504_naming_the_limit(strict_server, strict_client) -> None:
    limits = strict_server.limits
    strict_server.limits = type(limits)(**{**limits.__dict__, "deadline_s": 1e-9})
    try:
        response = strict_client.post("/generate", json={**GOOD, "settings": {"max_new_tokens": 16}})
    finally:
        strict_server.limits = limits
    assert response.status_code == 504 and "limits.deadline_s=1e-09" in response.json()["error"]
    assert strict_client.post("/generate", json=GOOD).status_code == 200


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": "Basic s3cret"}, 401),
        ({"Authorization": "Bearer s3cret"}, 200),
    ],
)
def test_a_bearer_token_guards_the_api_but_not_the_page(steerlm_run, headers, status) -> None:
    from fastapi.testclient import TestClient

    from steerable.generation import GenerationSettings
    from steerable.methods.registry import load_policy
    from steerable.serve.app import Server, build_app

    server = Server(load_policy(steerlm_run), GenerationSettings(max_new_tokens=2), token="s3cret")
    client = TestClient(build_app(server))
    assert client.get("/").status_code == 200
    assert client.get("/api/policy", headers=headers).status_code == status
    response = client.post("/generate", json=GOOD, headers=headers)
    assert response.status_code == status
    if status == 401:
        assert "bearer token" in response.json()["error"]


SERVE_CLI_CASES = [
    (["limits.max_new_tokens=0"], "limits.max_new_tokens"),
    (["limits.deadline_s=0"], "limits.deadline_s"),
    (["limits.queue=-1"], "limits.queue"),
    (["limits.body_bytes=lots"], "limits.body_bytes"),
    (["sampling.max_new_tokens=600"], "sampling.max_new_tokens=600 is over limits.max_new_tokens=512"),
    (["max_new_tokens=64"], "max_new_tokens is now sampling.max_new_tokens"),
    (["token="], "token"),
    (["port=70000"], "port"),
]


@pytest.mark.parametrize(("args", "needle"), SERVE_CLI_CASES, ids=lambda v: str(v))
def test_bad_serve_settings_are_one_clear_error(
    capsys, monkeypatch, tmp_path, steerlm_run, args, needle
) -> None:
    before = tree_hashes(steerlm_run)
    code, printed = invoke(capsys, monkeypatch, tmp_path, "serve", [f"run={steerlm_run}", *args])
    assert_clear_failure(code, printed, needle, tmp_path)
    assert tree_hashes(steerlm_run) == before


# ------------------------------------------------------------------------------------------------ export


def export_cases(run: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """out= folders an export must refuse, set up in tmp_path, with the expected message."""
    (tmp_path / "a_file").write_text("precious")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    (tmp_path / "link").symlink_to(tmp_path / "notes")
    other = tmp_path / "other_run"
    (other / ".hydra").mkdir(parents=True)
    (other / ".hydra" / "config.yaml").write_text("seed: 1\n")
    return {
        "the run folder itself": (run, "is inside the run folder"),
        "inside the run folder": (run / "exported", "is inside the run folder"),
        "the run's checkpoints": (run / "checkpoints", "is inside the run folder"),
        "a folder holding the run": (run.parent, "holds the run folder"),
        "inside another run folder": (other / "exported", "is inside the run folder"),
        "another run folder": (other, "is inside the run folder"),
        "a file": (tmp_path / "a_file", "is a file, not a folder"),
        "under a file": (tmp_path / "a_file" / "exported", "is a file, so no folder can be made"),
        "a folder of someone else's files": (tmp_path / "notes", "did not write"),
        "a symbolic link": (tmp_path / "link", "is a symbolic link"),
    }


EXPORT_CASE_NAMES = [
    "the run folder itself",
    "inside the run folder",
    "the run's checkpoints",
    "a folder holding the run",
    "inside another run folder",
    "another run folder",
    "a file",
    "under a file",
    "a folder of someone else's files",
    "a symbolic link",
]


@pytest.mark.parametrize("case", EXPORT_CASE_NAMES)
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_refused_export_leaves_every_byte_as_it_was(
    capsys, monkeypatch, tmp_path, steerlm_run, case, overwrite
) -> None:
    run = tmp_path / "runs" / "run"
    import shutil

    shutil.copytree(steerlm_run, run)
    out, needle = export_cases(run, tmp_path)[case]
    before = tree_hashes(tmp_path)
    code, printed = invoke(
        capsys,
        monkeypatch,
        tmp_path,
        "export",
        [f"run={run}", f"out={out}", f"overwrite={str(overwrite).lower()}"],
    )
    assert code == 2 and needle in printed and "Traceback" not in printed, printed[-2000:]
    assert tree_hashes(tmp_path) == before


def test_an_earlier_export_is_replaced_only_with_overwrite_and_a_failure_keeps_it(
    capsys, monkeypatch, tmp_path, steerlm_run
) -> None:
    from steerable.methods.registry import load_policy
    from steerable.policies.export import export_policy
    from steerable.policies.export_target import EXPORT_MARKER

    out = tmp_path / "exported"
    code, printed = invoke(capsys, monkeypatch, tmp_path, "export", [f"run={steerlm_run}", f"out={out}"])
    assert code == 0 and (out / EXPORT_MARKER).is_file(), printed[-2000:]
    first = tree_hashes(tmp_path)
    code, printed = invoke(capsys, monkeypatch, tmp_path, "export", [f"run={steerlm_run}", f"out={out}"])
    assert code == 2 and "add overwrite=true" in printed and tree_hashes(tmp_path) == first

    policy = load_policy(steerlm_run)
    monkeypatch.setattr(
        policy.tokenizer, "save_pretrained", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full"))
    )
    with pytest.raises(OSError, match="disk full"):
        export_policy(policy, steerlm_run, out, merged=True, overwrite=True)
    assert tree_hashes(tmp_path) == first  # the failed replacement left the earlier export, and nothing else
    monkeypatch.undo()

    code, printed = invoke(
        capsys,
        monkeypatch,
        tmp_path,
        "export",
        [f"run={steerlm_run}", f"out={out}", "merged=true", "overwrite=true"],
    )
    assert code == 0 and (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported"]  # no temporary or replaced folder left


def test_an_empty_folder_or_a_new_nested_path_is_exported_into(
    capsys, monkeypatch, tmp_path, steerlm_run
) -> None:
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new" / "nested"):
        code, printed = invoke(capsys, monkeypatch, tmp_path, "export", [f"run={steerlm_run}", f"out={out}"])
        assert code == 0 and (out / "README.md").is_file(), printed[-2000:]


# ------------------------------------------------------------------------ writes outside a new run folder


def test_replacing_a_checkpoint_folder_removes_only_what_it_made(tmp_path) -> None:
    from steerable.backbone.adapters import atomic_directory

    target, stranger = tmp_path / "final", tmp_path / ".final.old"
    target.mkdir()
    (target / "weights").write_text("v1")
    stranger.mkdir()
    (stranger / "keep.txt").write_text("not ours")
    with atomic_directory(target) as tmp:
        (tmp / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2"
    assert (stranger / "keep.txt").read_text() == "not ours"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".final.old", "final"]


def test_the_gguf_cache_keeps_a_finished_copy_and_refuses_to_clobber_a_foreign_folder(tmp_path) -> None:
    from steerable.backbone.loading import ModelLoadError, _publish

    done = tmp_path / "cache" / "model-done"
    done.mkdir(parents=True)
    (done / "config.json").write_text("{}")
    ours = tmp_path / "cache" / ".tmp-1"
    ours.mkdir()
    (ours / "config.json").write_text('{"ours": 1}')
    _publish(ours, done)  # another process finished first: its copy stays, ours goes
    assert (done / "config.json").read_text() == "{}" and not ours.exists()

    foreign = tmp_path / "cache" / "model-foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("someone's")
    ours.mkdir()
    (ours / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="cannot write the converted model"):
        _publish(ours, foreign)
    assert (foreign / "notes.txt").read_text() == "someone's" and not (foreign / "config.json").exists()


@pytest.mark.parametrize(
    ("host", "token", "warned"),
    [("127.0.0.1", None, None), ("::1", None, None), ("localhost", None, None),
     ("0.0.0.0", None, "anyone who reaches it"), ("192.168.1.5", None, "set token="),
     ("0.0.0.0", "s3cret", "must carry the bearer token"), ("myhost.example", None, "anyone")],
)  # fmt: skip
def test_binding_beyond_loopback_warns_and_says_whether_a_token_guards_it(
    caplog, host, token, warned
) -> None:
    import logging

    from steerable.cli.serve import warn_if_reachable

    with caplog.at_level(logging.WARNING, logger="steerable"):
        warn_if_reachable(host, 7860, token)
    messages = [r.getMessage() for r in caplog.records]
    if warned is None:
        assert not messages
    else:
        assert len(messages) == 1 and warned in messages[0] and f"{host}:7860" in messages[0]
