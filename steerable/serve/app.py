"""The serving app: one policy behind a bounded queue, a page that renders its controls, and a JSON API.

FastAPI with one static page rather than Gradio: the JSON API for scripts is FastAPI's native shape, the
widgets a steerable policy needs (integer dials, weights on a simplex, one side per dimension) are a few
lines of HTML from `Control.as_dict()`, and the install stays two small packages instead of Gradio's stack.

  GET  /              the page
  GET  /api/policy    the run's kind, origin, controls (with ranges and defaults), settings and limits
  POST /generate      {"prompt", "system", "controls", "settings"} -> {"text", "controls", "described", ...}
  POST /stream        the same request; NDJSON lines {"delta"} as tokens arrive, then {"done": <as /generate>}

Every request is checked whole (requests.py: types, limits, controls) before it reaches the queue; bad input is
a 4xx naming the field or limit, a full queue a 503 with Retry-After, a passed deadline a 504.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from transformers import TextStreamer

from steerable.config.schema import ConfigError, ServeLimits
from steerable.generation import GenerationSettings
from steerable.generation.hf import encode_prompt
from steerable.policies.base import SteerablePolicy
from steerable.serve.jobs import GenerationStopped, Job, Worker
from steerable.serve.requests import SETTING_KEYS, RequestError, limits_of, parse_request


@dataclass
class Checked:
    """A request that passed every check: ready to generate."""

    messages: list[dict[str, str]]
    values: dict[str, Any]
    settings: GenerationSettings


class QueueStreamer(TextStreamer):
    """transformers' streamer (it finds word boundaries), handing each piece of text to the event loop."""

    def __init__(self, tokenizer: Any, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.loop, self.queue = loop, queue

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, text)


class Server:
    """Generation for one policy: requests checked in full, then run one at a time on one thread."""

    def __init__(
        self,
        policy: SteerablePolicy,
        defaults: GenerationSettings,
        autocast: Callable[[], AbstractContextManager] = nullcontext,
        limits: ServeLimits | None = None,
        token: str | None = None,
    ) -> None:
        self.policy = policy
        self.defaults = defaults
        self.autocast = autocast  # entered on the generation thread: autocast state is per thread
        self.limits = limits or ServeLimits()
        self.token = token
        self.worker = Worker(policy.model, capacity=self.limits.queue + 1)

    def info(self) -> dict[str, Any]:
        defaults = (
            self.policy.resolve({}) if all(c.default is not None for c in self.policy.controls()) else {}
        )
        return {
            "kind": self.policy.kind,
            "origin": self.policy.origin,
            "controls": [c.as_dict() for c in self.policy.controls()],
            "defaults": defaults,
            "settings": {k: getattr(self.defaults, k) for k in SETTING_KEYS},
            "limits": limits_of(self.limits),
        }

    def check(self, raw: bytes) -> Checked:
        """The whole request checked, cheapest first; RequestError/ConfigError name what is wrong."""
        request = parse_request(raw)
        settings = request.generation_settings(self.defaults, self.limits)
        messages = request.messages()
        tokens = len(encode_prompt(self.policy.tokenizer, messages))
        if tokens > self.limits.prompt_tokens:
            raise RequestError(
                f"the prompt is {tokens} tokens, over the limit limits.prompt_tokens={self.limits.prompt_tokens}",
                413,
            )
        values = self.policy.resolve(request.controls)  # ConfigError names the control and what is allowed
        return Checked(messages, values, settings)

    def run(self, checked: Checked, streamer: Any = None) -> dict[str, Any]:
        """Generate (on the calling thread); the answer of /generate."""
        with self.autocast():
            self.policy.streamer = streamer
            try:
                (completion,) = self.policy.generate([checked.messages], checked.values, checked.settings)
            finally:
                self.policy.streamer = None
        return {
            "text": completion.text,
            "controls": checked.values,
            "described": self.policy.describe(checked.values),
            "finish_reason": completion.finish_reason,
            "tokens": len(completion.token_ids),
            "seed": checked.settings.seed,
        }

    def generate(self, body: dict[str, Any]) -> dict[str, Any]:
        """One request body, checked and generated here (scripts and tests; the app goes through the queue)."""
        return self.run(self.check(json.dumps(body).encode()))

    def warm_up(self) -> None:
        """One short reply on the generation thread before the first request, so that request does not pay the
        one-time costs (kernel selection and caches for these shapes, lazy imports) that steerable-generate's
        single call includes."""
        if not all(c.default is not None for c in self.policy.controls()):
            return  # a control without a default (PCM's sides): no request to make up
        messages = [{"role": "user", "content": "Hi"}]
        settings = replace(self.defaults, max_new_tokens=2, num_return_sequences=1, batch_size=1)
        checked = Checked(messages, self.policy.resolve({}), settings)
        self.worker.submit(Job(self.limits.deadline_s), lambda: self.run(checked)).result()

    def enqueue(self, checked: Checked, streamer: Any = None) -> tuple[Job, asyncio.Future]:
        if self.worker.stopping:
            raise RequestError("the server is shutting down", 503)
        if self.worker.full():
            raise QueueFull(self.worker.retry_after())
        job = Job(self.limits.deadline_s)
        return job, asyncio.wrap_future(self.worker.submit(job, lambda: self.run(checked, streamer)))


class QueueFull(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the queue is full (limits.queue); retry in {retry_after} s")
        self.retry_after = retry_after


def page() -> str:
    return resources.files("steerable.serve").joinpath("page.html").read_text()


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes `limit` bytes (declared or sent): nothing larger is held."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"the body is {declared} bytes, over the limit limits.body_bytes={limit}", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"the body is over the limit limits.body_bytes={limit}", 413)
        chunks.append(chunk)
    return b"".join(chunks)


async def finished(request: Request, job: Job, future: asyncio.Future) -> Any:
    """The job's result; the job is cancelled if the client goes away while it waits or runs."""
    while True:
        done, _ = await asyncio.wait({future}, timeout=0.25)
        if done:
            return future.result()
        if await request.is_disconnected():
            job.cancel("the client went away")
            return await future


async def stream_lines(job: Job, future: asyncio.Future, pieces: asyncio.Queue) -> AsyncIterator[str]:
    """NDJSON deltas while the job runs, then its answer or error; a closed connection cancels the job."""
    try:
        while not future.done() or not pieces.empty():
            getter = asyncio.ensure_future(pieces.get())
            await asyncio.wait({getter, future}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield json.dumps({"delta": getter.result()}) + "\n"
            else:
                getter.cancel()
        try:
            yield json.dumps({"done": future.result()}) + "\n"
        except (GenerationStopped, RequestError, ConfigError) as err:
            yield json.dumps({"error": str(err)}) + "\n"
    finally:
        job.cancel("the client went away")  # a no-op once the job is done


def build_app(server: Server) -> FastAPI:
    app = FastAPI(title=f"steerable-serve: {server.policy.origin}")
    add_error_handlers(app)

    @app.middleware("http")
    async def bearer_token(request: Request, call_next: Callable) -> Any:
        if server.token is None or request.url.path == "/" or authorized(request, server.token):
            return await call_next(request)
        return JSONResponse({"error": "missing or wrong bearer token (Authorization: Bearer <token>)"}, 401)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page()

    @app.get("/api/policy")
    def policy_info() -> dict[str, Any]:
        return server.info()

    @app.post("/generate")
    async def generate(request: Request) -> dict[str, Any]:
        checked = server.check(await read_body(request, server.limits.body_bytes))
        job, future = server.enqueue(checked)
        return await finished(request, job, future)

    @app.post("/stream")
    async def stream(request: Request) -> StreamingResponse:
        checked = server.check(await read_body(request, server.limits.body_bytes))  # refused before it starts
        pieces: asyncio.Queue = asyncio.Queue()
        streamer = QueueStreamer(server.policy.tokenizer, asyncio.get_running_loop(), pieces)
        job, future = server.enqueue(checked, streamer)
        return StreamingResponse(stream_lines(job, future, pieces), media_type="application/x-ndjson")

    return app


def authorized(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def add_error_handlers(app: FastAPI) -> None:
    """Every refusal as {"error": one line}: bad input 4xx, a full queue 503 + Retry-After, a deadline 504."""

    @app.exception_handler(RequestError)
    async def bad_request(request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.exception_handler(ConfigError)
    async def bad_control(request: Request, err: ConfigError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=400)

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, err: QueueFull) -> JSONResponse:
        return JSONResponse({"error": str(err)}, 503, headers={"Retry-After": str(err.retry_after)})

    @app.exception_handler(GenerationStopped)
    async def stopped(request: Request, err: GenerationStopped) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=err.status)
