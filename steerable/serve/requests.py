"""What a request may say, as pydantic models: every field type-checked (strictly: "5" is not a number) and every
error naming its field, before the model is touched. Limits are checked here too, and going over one is an
error naming the limit and how to raise it; nothing is silently clamped."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from steerable.config.schema import ServeLimits
from steerable.generation import GenerationSettings


class RequestError(ValueError):
    """A bad request: answered with `status` and the message (one line naming the field or limit)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class RequestSettings(BaseModel):
    """The sampling settings a request may change; the ones it leaves out keep the server's (so the values
    below are never used: only the fields a request sets are read)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_new_tokens: int = Field(1, ge=1)
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)
    seed: int | None = None


class GenerateRequest(BaseModel):
    """The body of POST /generate and POST /stream."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1)
    system: str | None = None
    controls: dict[str, Any] = Field(default_factory=dict)  # checked by the policy (names, ranges)
    settings: RequestSettings = Field(default_factory=RequestSettings)

    @field_validator("prompt")
    @classmethod
    def not_blank(cls, prompt: str) -> str:
        if not prompt.strip():
            raise ValueError("the prompt is only whitespace")
        return prompt

    def messages(self) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, {"role": "user", "content": self.prompt}]

    def generation_settings(self, defaults: GenerationSettings, limits: ServeLimits) -> GenerationSettings:
        given = self.settings.model_dump(exclude_unset=True)
        wanted = given.get("max_new_tokens", defaults.max_new_tokens)
        if wanted > limits.max_new_tokens:
            raise RequestError(
                f"settings.max_new_tokens={wanted} is over the limit limits.max_new_tokens="
                f"{limits.max_new_tokens} (start steerable-serve with a higher limits.max_new_tokens= to allow it)"
            )
        return GenerationSettings(**{**asdict(defaults), **given, "num_return_sequences": 1, "batch_size": 1})


SETTING_KEYS = sorted(RequestSettings.model_fields)


def parse_request(raw: bytes) -> GenerateRequest:
    """The body as a request, or a RequestError naming what is wrong (and where)."""
    try:
        body = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(f"the body is not JSON: {err}") from None
    try:
        return GenerateRequest.model_validate(body)
    except ValidationError as err:
        raise RequestError(describe(err)) from None


def describe(err: ValidationError) -> str:
    """pydantic's errors as one line: `field: problem (got value)` for each."""
    parts = []
    for problem in err.errors(include_url=False):
        where = ".".join(str(part) for part in problem["loc"]) or "the body"
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            known = SETTING_KEYS if problem["loc"][0] == "settings" else sorted(GenerateRequest.model_fields)
            message = f"unknown field; known: {known}"
        elif problem["type"] != "missing":
            message += f" (got {_short(problem.get('input'))})"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def limits_of(limits: ServeLimits) -> dict[str, Any]:
    return {f.name: getattr(limits, f.name) for f in fields(limits)}
