"""Request bodies and the one JSON error shape of the HTTP API (pydantic at the edge)."""

from __future__ import annotations

import json
from functools import partial
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    StringConstraints,
    ValidationError,
    field_validator,
)

from bot.answering.models import MAX_QUESTION_CHARS

SpaceKey = Annotated[StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
M = TypeVar("M", bound=BaseModel)
dumps = partial(json.dumps, ensure_ascii=False)  # the same JSON `askdocs ask --json` prints


class ApiError(Exception):
    """Raised by a handler; answered as `{"ok": false, "error": message, "status": status, **extra}`."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def error_response(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"ok": False, "error": message, "status": status, **extra}, status=status,
                             dumps=dumps)


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    question: StrictStr
    spaces: list[SpaceKey] | None = Field(default=None, max_length=100)
    # CONFLUENCE_PERMISSIONS=per-user: answer from the pages this person (an email) may read; without it,
    # from organisation-wide pages only. Ignored in public mode.
    as_user: StrictStr | None = Field(default=None, max_length=320)

    @field_validator("question")
    @classmethod
    def _question(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        if len(value) > MAX_QUESTION_CHARS:
            raise ValueError(f"is {len(value)} characters long; the limit is {MAX_QUESTION_CHARS}")
        return value


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    spaces: list[SpaceKey] | None = Field(default=None, max_length=100)
    space_keys: list[SpaceKey] | None = Field(default=None, max_length=100)  # the FastAPI tutorial's name
    force: bool = False


_FRIENDLY = {"missing": "is required", "string_type": "must be a string", "list_type": "must be a list",
             "bool_parsing": "must be true or false", "bool_type": "must be true or false",
             "model_type": "request body must be a JSON object"}


def describe_validation(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    message = _FRIENDLY.get(first["type"], first["msg"].removeprefix("Value error, "))
    return f"{where}: {message}" if where else message


async def read_body(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip() and allow_empty:
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def parse(model: type[M], body: dict[str, Any]) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise ApiError(400, describe_validation(error)) from None


def parse_flag(value: str | None, *, name: str) -> bool:
    if value is None or value.lower() in ("", "0", "false", "no"):
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    raise ApiError(400, f"{name}: must be true or false")


