"""Load and faults on a real `steerable-serve` over loopback: concurrent clients for a fixed time, mixing good
requests (/generate and /stream) with oversized bodies, over-long prompts, malformed JSON and clients that hang
up mid-stream. Prints p50/p95 latency and throughput of the good requests, the count of each outcome, and the
server's RSS; fails if a good request is answered wrongly, any response is a 5xx, or any request hangs.

tests/test_serve_load.py runs the same driver (`run_load`) as a test.

  python benchmarks/serve_load.py --smoke                         # tiny run, 4 clients, 3 s (the table, not a load)
  python benchmarks/serve_load.py --clients 16 --seconds 60       # the issue's size
  python benchmarks/serve_load.py --run outputs/quickstart/<timestamp>
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["Any tips for running?", "How do I sleep better?"]
CONTROLS = [{"attributes.verbosity": 0}, {"attributes.verbosity": 4}]
KINDS = ["good", "good-stream", "oversized", "long-prompt", "malformed", "disconnect"]
EXPECTED = {"oversized": 413, "long-prompt": 413, "malformed": 400}


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)  # good requests, seconds
    counts: Counter = field(default_factory=Counter)  # (kind, status or 'hang'/'wrong'/...) -> n
    problems: list[str] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def good(self) -> int:
        return len(self.latencies)


def server_command(run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "steerable.cli.serve", f"run={run}", "port=0", *extra]


def start_server(run: Path, cwd: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        server_command(run, *extra),
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    for line in process.stdout:
        seen.append(line)
        if " at http://" in line:
            threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()  # drain
            port = int(line.rsplit(":", 1)[1].strip().strip("/"))
            wait_until_listening(port)
            return process, port
    raise RuntimeError(f"steerable-serve did not start: {''.join(seen)[-2000:]}")


def wait_until_listening(port: int, seconds: float = 60) -> None:
    """The socket is bound before the line is printed; uvicorn starts listening a moment later."""
    give_up = time.monotonic() + seconds
    while True:
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=5).connect()
            return
        except ConnectionRefusedError:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.1)


def request(port: int, path: str, body: bytes, timeout: float) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def good_body(i: int, max_new_tokens: int) -> tuple[bytes, tuple[int, int]]:
    key = (i % len(PROMPTS), (i // len(PROMPTS)) % len(CONTROLS))
    body = {
        "prompt": PROMPTS[key[0]],
        "controls": CONTROLS[key[1]],
        "settings": {"max_new_tokens": max_new_tokens},
    }
    return json.dumps(body).encode(), key


def references(port: int, max_new_tokens: int) -> dict[tuple[int, int], str]:
    """Each good request's answer from the idle server: under load the same request must get the same text."""
    answers = {}
    for i in range(len(PROMPTS) * len(CONTROLS)):
        body, key = good_body(i, max_new_tokens)
        status, raw = request(port, "/generate", body, timeout=120)
        if status != 200:
            raise RuntimeError(f"the idle server answered {status}: {raw[:500]!r}")
        answers[key] = json.loads(raw)["text"]
    return answers


def one_request(kind: str, i: int, port: int, setup: dict, outcome: Outcome, lock: threading.Lock) -> None:
    timeout = setup["timeout"]
    start = time.perf_counter()
    try:
        result = _send(kind, i, port, setup, timeout)
    except TimeoutError:
        result = ("hang", f"{kind}: no answer in {timeout} s")
    except (ConnectionError, http.client.HTTPException, OSError) as err:
        result = ("error", f"{kind}: {type(err).__name__}: {err}")
    with lock:
        status, problem = result
        outcome.counts[(kind, status)] += 1
        if problem:
            outcome.problems.append(problem)
        elif kind.startswith("good"):
            outcome.latencies.append(time.perf_counter() - start)


def _send(kind: str, i: int, port: int, setup: dict, timeout: float) -> tuple[object, str | None]:
    if kind == "disconnect":
        return _disconnect(i, port, setup, timeout)
    if kind.startswith("good"):
        body, key = good_body(i, setup["max_new_tokens"])
        route = "/stream" if kind == "good-stream" else "/generate"
        status, raw = request(port, route, body, timeout)
        text = _answer_text(route, raw) if status == 200 else None
        wrong = status != 200 or text != setup["references"][key]
        return status, (f"{kind}: {status} {raw[:300]!r}" if wrong else None)
    body = {
        "oversized": lambda: json.dumps({"prompt": "x" * (setup["body_bytes"] + 1)}).encode(),
        "long-prompt": lambda: json.dumps({"prompt": "run " * (setup["prompt_tokens"] + 10)}).encode(),
        "malformed": lambda: b'{"prompt": "hi", "settings": {',
    }[kind]()
    status, raw = request(port, "/generate", body, timeout)
    return status, (f"{kind}: {status} {raw[:300]!r}" if status != EXPECTED[kind] else None)


def _answer_text(route: str, raw: bytes) -> str | None:
    if route == "/generate":
        return json.loads(raw).get("text")
    last = json.loads(raw.decode().strip().splitlines()[-1])
    return last.get("done", {}).get("text")


def _disconnect(i: int, port: int, setup: dict, timeout: float) -> tuple[object, str | None]:
    """A /stream client that reads the first line (or the headers) and hangs up."""
    body, _ = good_body(i, setup["max_new_tokens"])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/stream", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        if response.status == 200:
            response.readline()
        return response.status, (None if response.status == 200 else f"disconnect: {response.status}")
    finally:
        connection.sock and connection.sock.close()
        connection.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_load(port: int, pid: int, clients: int, seconds: float, setup: dict) -> Outcome:
    """`clients` threads, each sending requests of every kind in turn until `seconds` have passed."""
    outcome, lock = Outcome(), threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(n: int) -> None:
        i = n
        while time.monotonic() < stop_at:
            one_request(KINDS[i % len(KINDS)], i, port, setup, outcome, lock)
            i += clients

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        outcome.rss_mb.append(rss_mb(pid))
        time.sleep(0.5)
        if time.monotonic() > stop_at + setup["timeout"] + 30:
            outcome.problems.append("clients still running long after the end: a hang")
            break
    outcome.seconds = time.monotonic() - start
    return outcome


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def report(outcome: Outcome, clients: int, seconds: float) -> str:
    lines = [
        f"{clients} clients for {seconds:g} s over loopback ({outcome.seconds:.1f} s until the last answer)",
        "",
        "| good requests | p50 latency s | p95 latency s | good/s | server RSS MB (start / max) |",
        "|---|---|---|---|---|",
        f"| {outcome.good} | {percentile(outcome.latencies, 0.5):.2f} | {percentile(outcome.latencies, 0.95):.2f} "
        f"| {outcome.good / outcome.seconds:.2f} | {outcome.rss_mb[0]:.0f} / {max(outcome.rss_mb):.0f} |",
        "",
        "outcomes: " + ", ".join(f"{k}={s}: {n}" for (k, s), n in sorted(outcome.counts.items(), key=str)),
    ]
    if outcome.problems:
        lines.append(f"PROBLEMS ({len(outcome.problems)}): " + "; ".join(outcome.problems[:10]))
    return "\n".join(lines)


TRAIN = [
    "model=tiny", "data=demo", "hardware=cpu", "logger=csv", "method=steerlm", "method.labels=human",
    "method.stages=[acsft]", "trainer.max_steps=2", "data.max_records=48", "report.num_samples=1",
    "report.sampling.max_new_tokens=4",
]  # fmt: skip


def make_tiny_run(root: Path) -> Path:
    overrides = [*TRAIN, f"output_root={root}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "steerable.cli.train", *overrides], check=True, env=env, cwd=root,
                   capture_output=True)  # fmt: skip
    (marker,) = root.rglob(".steerable/complete")
    return marker.parent.parent


LIMITS = {"body_bytes": 8192, "prompt_tokens": 256, "queue": 32}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="4 clients for 3 s on a fresh tiny run")
    parser.add_argument("--run", type=Path)
    parser.add_argument("--clients", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    args = parser.parse_args()
    seconds = args.seconds or (3 if args.smoke else 60)
    clients = args.clients or (4 if args.smoke else 16)
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or make_tiny_run(Path(tmp))
        extra = [f"limits.{k}={v}" for k, v in LIMITS.items()]
        process, port = start_server(run, Path(tmp), *extra, "hardware.torch_threads=2")
        try:
            setup = {**LIMITS, "max_new_tokens": args.max_new_tokens, "timeout": 120.0}
            setup["references"] = references(port, args.max_new_tokens)
            outcome = run_load(port, process.pid, clients, seconds, setup)
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(report(outcome, clients, seconds))
    if outcome.problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
