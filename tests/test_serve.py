"""`steerable-serve`: the JSON API over the policy layer, the real CLI on a port, and the page in a real browser
(headless Chromium through Playwright; skipped with a reason where either is missing)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from steerable.generation import GenerationSettings
from steerable.methods.registry import load_policy
from steerable.serve.app import Server, build_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def client(steerlm_run) -> TestClient:
    server = Server(load_policy(steerlm_run), GenerationSettings(max_new_tokens=6, seed=5))
    return TestClient(build_app(server))


def ask(client: TestClient, **controls) -> dict:
    response = client.post("/generate", json={"prompt": "Any tips for running?", "controls": controls})
    assert response.status_code == 200, response.text
    return response.json()


def test_policy_info_lists_the_runs_dials_with_ranges_and_defaults(client) -> None:
    info = client.get("/api/policy").json()
    assert info["kind"] == "steerlm"
    dials = {c["name"]: c for c in info["controls"]}
    assert set(dials) == {"attributes.verbosity", "attributes.positivity"}
    assert dials["attributes.verbosity"]["low"] == 0 and dials["attributes.verbosity"]["high"] == 4
    assert set(info["defaults"]) == set(dials) and info["settings"]["max_new_tokens"] == 6


def test_generate_follows_the_controls_and_repeats_for_the_same_request(client) -> None:
    low, high = ask(client, **{"attributes.verbosity": 0}), ask(client, **{"attributes.verbosity": 4})
    assert "verbosity:0" in low["described"] and "verbosity:4" in high["described"]
    assert low["controls"]["attributes.verbosity"] == 0 and high["controls"]["attributes.verbosity"] == 4
    assert ask(client, **{"attributes.verbosity": 0})["text"] == low["text"]


def test_bad_requests_are_400_with_a_message_naming_the_problem(client) -> None:
    response = client.post("/generate", json={"prompt": "hi", "controls": {"attributes.verbosity": 9}})
    assert response.status_code == 400 and "attributes.verbosity=9" in response.json()["error"]
    response = client.post("/generate", json={"prompt": "hi", "controls": {"attributes.humor": 1}})
    assert response.status_code == 400 and "humor" in response.json()["error"]
    response = client.post("/generate", json={"prompt": "", "controls": {}})
    assert response.status_code == 400 and "prompt" in response.json()["error"]
    response = client.post("/generate", content=b"not json")
    assert response.status_code == 400 and "JSON" in response.json()["error"]
    response = client.post("/generate", json={"prompt": "hi", "settings": {"temprature": 1}})
    assert response.status_code == 400 and "temprature" in response.json()["error"]


def test_a_clp_run_is_served_with_weights_on_the_simplex(clp_run) -> None:
    clp = TestClient(build_app(Server(load_policy(clp_run), GenerationSettings(max_new_tokens=6, seed=5))))
    (control,) = clp.get("/api/policy").json()["controls"]
    assert control["kind"] == "weights" and control["options"] == ["verbosity", "positivity"]
    assert control["default"] == [0.5, 0.5]
    reply = clp.post("/generate", json={"prompt": "Any tips?", "controls": {"weights": [0.2, 0.8]}}).json()
    assert reply["controls"] == {"weights": [0.2, 0.8]} and "positivity" in reply["described"]
    response = clp.post("/generate", json={"prompt": "Any tips?", "controls": {"weights": [0.5, 0.6]}})
    assert response.status_code == 400 and "sum to 1" in response.json()["error"]


def test_a_pcm_run_is_served_with_one_side_per_dimension(trained_run) -> None:
    from tests.test_pcm_method import PCM

    run_dir = trained_run(*PCM)  # tests/test_pcm_method.py's run (its eval stage too)
    pcm = TestClient(build_app(Server(load_policy(run_dir), GenerationSettings(max_new_tokens=6, seed=5))))
    controls = {c["name"]: c for c in pcm.get("/api/policy").json()["controls"]}
    assert controls["preference.verbosity"]["kind"] == "choice"
    assert controls["preference.verbosity"]["options"] == ["concise", "detailed"]
    assert controls["preference.positivity"]["options"] == ["unfriendly", "friendly"]
    by_name = {"verbosity": "concise", "positivity": "friendly"}
    reply = pcm.post("/generate", json={"prompt": "Any tips?", "controls": by_name}).json()
    assert reply["controls"] == {"preference.verbosity": "concise", "preference.positivity": "friendly"}
    as_text = pcm.post(
        "/generate", json={"prompt": "Any tips?", "controls": {"preference": "concise, friendly"}}
    )
    assert as_text.json()["text"] == reply["text"]  # the shorthand is the same request
    missing = pcm.post("/generate", json={"prompt": "Any tips?", "controls": {"verbosity": "concise"}})
    assert missing.status_code == 400 and "preference.positivity is required" in missing.json()["error"]


def test_stream_ends_with_the_same_answer_as_generate(client) -> None:
    body = {"prompt": "Any tips for running?", "controls": {"attributes.positivity": 4}}
    lines = [json.loads(line) for line in client.post("/stream", json=body).text.splitlines()]
    assert lines[-1]["done"]["text"] == ask(client, **body["controls"])["text"]
    assert "".join(m["delta"] for m in lines[:-1]).startswith(lines[-1]["done"]["text"][:1])


def start_cli(run_dir: Path, cwd: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "steerable.cli.serve",
            f"run={run_dir}",
            "port=0",
            "sampling.max_new_tokens=6",
        ],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    seen = []
    while not (seen and "http://" in seen[-1]):  # warnings may come first
        line = process.stdout.readline()
        if not line:
            pytest.fail(f"steerable-serve did not start: {''.join(seen)[-2000:]}")
        seen.append(line)
    url = seen[-1].split(" at ")[-1].strip()
    for _ in range(100):  # the socket is bound before the line is printed; wait for the app
        try:
            urllib.request.urlopen(url + "/api/policy", timeout=5)
            return process, url
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    process.kill()
    pytest.fail("steerable-serve never answered")


def test_cli_serves_on_loopback_and_answers_a_form_encoded_curl_body(steerlm_run, tmp_path) -> None:
    process, url = start_cli(steerlm_run, tmp_path)
    try:
        assert url.startswith("http://127.0.0.1:")
        # what `curl -d '{...}'` sends: a JSON body labelled as a form
        data = json.dumps({"prompt": "Any tips?", "controls": {"verbosity": 0, "positivity": 4}}).encode()
        with urllib.request.urlopen(
            urllib.request.Request(url + "/generate", data=data), timeout=60
        ) as reply:
            answer = json.loads(reply.read())
        assert "verbosity:0,positivity:4" in answer["described"] and isinstance(answer["text"], str)
    finally:
        process.kill()


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian package chromium)")
def test_the_page_in_a_real_browser_moves_a_slider_and_the_request_follows(steerlm_run, tmp_path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    process, url = start_cli(steerlm_run, tmp_path)
    sent: list[dict] = []
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            page.on(
                "request",
                lambda r: sent.append(json.loads(r.post_data)) if r.url.endswith("/stream") else None,
            )
            page.goto(url)
            page.wait_for_selector("body[data-ready=true]")
            slider = page.locator("#ctl-A-attributes\\.verbosity")
            assert slider.get_attribute("min") == "0" and slider.get_attribute("max") == "4"
            slider.fill("3")  # a range input takes its value like this, firing input/change
            page.click("#ask")
            page.wait_for_selector("#out-A[data-finished=true]", timeout=60_000)
            first = page.inner_text("#described-A")
            slider.fill("0")
            page.evaluate("document.getElementById('out-A').dataset.finished = ''")
            page.click("#ask")
            page.wait_for_selector("#out-A[data-finished=true]", timeout=60_000)
            second = page.inner_text("#described-A")
            page.screenshot(path=str(tmp_path / "page.png"))
            browser.close()
    finally:
        process.kill()
    assert [r["controls"]["attributes.verbosity"] for r in sent] == [3, 0]
    assert "verbosity:3" in first and "verbosity:0" in second
