"""The serving app: one policy behind a lock, a page that renders its controls, and a JSON API.

FastAPI with one static page rather than Gradio: the JSON API for scripts is FastAPI's native shape, the
widgets a steerable policy needs (integer dials, weights on a simplex, one side per dimension) are a few
lines of HTML from `Control.as_dict()`, and the install stays two small packages instead of Gradio's stack.

  GET  /              the page
  GET  /api/policy    the run's kind, origin and controls (with ranges and defaults)
  POST /generate      {"prompt", "controls", "settings"} -> {"text", "controls", "described", ...}
  POST /stream        the same request; NDJSON lines {"delta"} as tokens arrive, then {"done": <as /generate>}
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import fields
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from steerable.config.schema import ConfigError
from steerable.generation import GenerationSettings
from steerable.policies.base import SteerablePolicy

SETTING_KEYS = {f.name for f in fields(GenerationSettings)} - {"num_return_sequences", "batch_size", "stop"}
MAX_NEW_TOKENS = 512


class RequestError(ValueError):
    """A bad request body: answered 400 with the message."""


def request_settings(body: dict[str, Any], defaults: GenerationSettings) -> GenerationSettings:
    given = body.get("settings") or {}
    if not isinstance(given, dict):
        raise RequestError("settings must be an object")
    unknown = sorted(set(given) - SETTING_KEYS)
    if unknown:
        raise RequestError(f"unknown settings {unknown}; known: {sorted(SETTING_KEYS)}")
    values = {f.name: getattr(defaults, f.name) for f in fields(GenerationSettings)} | given
    values["max_new_tokens"] = min(int(values["max_new_tokens"]), MAX_NEW_TOKENS)
    try:
        return GenerationSettings(**{**values, "num_return_sequences": 1, "batch_size": 1})
    except (ConfigError, TypeError, ValueError) as err:
        raise RequestError(str(err)) from None


def chat(body: dict[str, Any]) -> list[dict]:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RequestError("prompt must be a non-empty string")
    system = body.get("system")
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


class Server:
    """Generation for one policy, one request at a time (the model is not thread-safe)."""

    def __init__(
        self,
        policy: SteerablePolicy,
        defaults: GenerationSettings,
        autocast: Callable[[], AbstractContextManager] = nullcontext,
    ) -> None:
        self.policy = policy
        self.defaults = defaults
        self.autocast = autocast  # per call: autocast is thread-local and requests run on worker threads
        self.lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        defaults = (
            self.policy.resolve({}) if all(c.default is not None for c in self.policy.controls()) else {}
        )
        return {
            "kind": self.policy.kind,
            "origin": self.policy.origin,
            "controls": [c.as_dict() for c in self.policy.controls()],
            "defaults": defaults,
            "settings": {k: getattr(self.defaults, k) for k in sorted(SETTING_KEYS)},
        }

    def generate(self, body: dict[str, Any], streamer: Any = None) -> dict[str, Any]:
        messages, settings = chat(body), request_settings(body, self.defaults)
        controls = body.get("controls") or {}
        if not isinstance(controls, dict):
            raise RequestError("controls must be an object")
        values = self.policy.resolve(controls)  # ConfigError names the control and what the run allows
        with self.lock, self.autocast():
            self.policy.streamer = streamer
            try:
                (completion,) = self.policy.generate([messages], values, settings)
            finally:
                self.policy.streamer = None
        return {
            "text": completion.text,
            "controls": values,
            "described": self.policy.describe(values),
            "finish_reason": completion.finish_reason,
            "tokens": len(completion.token_ids),
            "seed": settings.seed,
        }

    def stream(self, body: dict[str, Any]) -> Iterator[str]:
        """NDJSON: {"delta": text} as the reply grows, then {"done": <the /generate answer>} (its text is
        authoritative: stop strings are cut there) or {"error": message}."""
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.policy.tokenizer, skip_prompt=True, skip_special_tokens=True)
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                result["done"] = self.generate(body, streamer)
            except (RequestError, ConfigError) as err:
                result["error"] = str(err)
            finally:
                streamer.end()  # also ends the stream when the engine did not use the streamer

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        for delta in streamer:
            if delta:
                yield json.dumps({"delta": delta}) + "\n"
        thread.join()
        yield json.dumps(result) + "\n"


def page() -> str:
    return resources.files("steerable.serve").joinpath("page.html").read_text()


def build_app(server: Server) -> FastAPI:
    app = FastAPI(title=f"steerable-serve: {server.policy.origin}")

    async def body_of(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"{}")
        except json.JSONDecodeError as err:
            raise RequestError(f"the body is not JSON: {err}") from None
        if not isinstance(body, dict):
            raise RequestError("the body must be a JSON object")
        return body

    @app.exception_handler(RequestError)
    @app.exception_handler(ConfigError)
    async def bad_request(request: Request, err: Exception) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=400)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page()

    @app.get("/api/policy")
    def policy_info() -> dict[str, Any]:
        return server.info()

    @app.post("/generate")
    async def generate(request: Request) -> dict[str, Any]:
        body = await body_of(request)
        return await run_in_threadpool(server.generate, body)  # the page stays responsive meanwhile

    @app.post("/stream")
    async def stream(request: Request) -> StreamingResponse:
        body = await body_of(request)
        chat(body)  # refuse a bad prompt before the stream starts
        return StreamingResponse(server.stream(body), media_type="application/x-ndjson")

    return app
