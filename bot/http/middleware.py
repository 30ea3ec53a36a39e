"""API middleware: every error in one JSON shape (secrets redacted), the API key on /api/*."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from bot.http.requests import ApiError, error_response
from db.errors import DATABASE_UNREACHABLE
from ingest.errors import one_line

logger = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
PUBLIC_PATHS = frozenset({"/healthz", "/metrics", "/api/health"})
DATABASE_DOWN_MESSAGE = "the knowledge base database is unreachable right now; try again shortly"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_errors(redact: Callable[[str], str]) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as error:
            return error_response(error.status, redact(one_line(error.message)), **error.extra)
        except web.HTTPException as error:
            if error.status < 400:
                raise
            return error_response(error.status, error.reason.lower())
        except DATABASE_UNREACHABLE as error:
            logger.warning("%s %s: database unreachable: %s", request.method, request.path,
                           redact(str(error)))
            return error_response(503, DATABASE_DOWN_MESSAGE)
        except Exception:
            logger.exception("%s %s failed", request.method, request.path)
            return error_response(500, "internal error; the askdocs log has the details")

    return middleware


def require_api_key(api_key: str | None) -> Middleware:
    expected = api_key.encode() if api_key else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None and request.path not in PUBLIC_PATHS:
            given = request.headers.get(API_KEY_HEADER, "").encode()
            if not hmac.compare_digest(given, expected):
                raise ApiError(401, f"missing or wrong {API_KEY_HEADER}")
        return await handler(request)

    return middleware


