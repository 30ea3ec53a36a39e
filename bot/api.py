"""The HTTP API: /healthz, /metrics, /api/query, /api/sync — one JSON error shape, an API key on /api/*.

Also keeps the routes of the widely copied FastAPI tutorial working unchanged: `GET /api/health`,
`POST /api/sync` with `{"space_keys": [...], "force": bool}` (answered when the run is complete, as is
`?wait=true`) and `POST /api/query` with `{"question"}`.

Without API_KEY the process binds 127.0.0.1 only (see bot.runtime) and no key is asked for.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Annotated, Any, TypeVar

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    StringConstraints,
    ValidationError,
    field_validator,
)

from bot.answer import AskContext, QuestionError
from bot.logs import RedactSecrets
from bot.metrics import sample_value
from bot.services import Services
from bot.sync_runner import AlreadyRunning, RunOutcome, StartedRun
from db import activity, runs
from db.errors import DATABASE_UNREACHABLE
from db.models import SyncRun
from ingest.embedders import EmbeddingError

logger = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 10_000
API_KEY_HEADER = "X-API-Key"
PUBLIC_PATHS = frozenset({"/healthz", "/metrics", "/api/health"})
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NOT_CONFIGURED = ("Confluence is not configured: set CONFLUENCE_BASE_URL with CONFLUENCE_EMAIL + "
                  "CONFLUENCE_API_TOKEN (Cloud) or CONFLUENCE_PAT (Data Center)")
DATABASE_DOWN_MESSAGE = "the knowledge base database is unreachable right now; try again shortly"

NextSyncAt = Callable[[], datetime | None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SpaceKey = Annotated[StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
M = TypeVar("M", bound=BaseModel)
QUESTION_ERROR_REASONS = ("bad_request", "embedding", "database", "internal")
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


# ---- request bodies (pydantic at the edge; unknown fields are ignored) --------------------------------

class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    question: StrictStr
    spaces: list[SpaceKey] | None = Field(default=None, max_length=100)

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


# ---- knowledge-base facts read at request time ----------------------------------------------------------

@dataclass(frozen=True)
class Snapshot:
    spaces: list[dict[str, Any]]
    last_success: SyncRun | None
    running: SyncRun | None

    @property
    def pages(self) -> int:
        return sum(int(s["pages"]) for s in self.spaces)

    @property
    def chunks(self) -> int:
        return sum(int(s["chunks"]) for s in self.spaces)


async def read_snapshot(pool: asyncpg.Pool, *, timeout_s: float) -> Snapshot:
    """Counts per space and the sync runs of note, or TimeoutError: a health check must answer quickly."""
    async with asyncio.timeout(timeout_s), pool.acquire() as conn:
        return Snapshot(
            spaces=await activity.space_counts(conn),
            last_success=await runs.last_successful_run(conn),
            running=await runs.running_run(conn),
        )


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def run_json(run: SyncRun) -> dict[str, Any]:
    return {"run_id": run.id, "status": run.status, "trigger": run.trigger, "requested_by": run.requested_by,
            "spaces": list(run.spaces), "force": run.force, "started_at": iso(run.started_at),
            "finished_at": iso(run.finished_at), "counters": run.counters, "error": run.error}


def compat_summary(outcome: RunOutcome) -> dict[str, Any]:
    """The FastAPI tutorial's answer ("complete" even with failed pages) plus our counters."""
    report = outcome.report
    return {
        "status": "complete",
        "synced": report.pages_added + report.pages_updated,
        "skipped": report.pages_unchanged + report.pages_skipped,
        "failed": report.pages_failed,
        **outcome.counters(),
        "run_id": outcome.run_id,
        "run_status": outcome.status,
        "failures": [failure.__dict__ for failure in report.failures[:100]],
    }


def gauge(name: str, help_text: str, samples: Sequence[tuple[dict[str, str], float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    for labels, value in samples:
        inner = ",".join(f'{k}="{escape_label(v)}"' for k, v in sorted(labels.items()))
        lines.append(f"{name}{{{inner}}} {sample_value(value)}" if inner else f"{name} {sample_value(value)}")
    return lines


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def snapshot_gauges(snapshot: Snapshot | None, next_sync_at: datetime | None) -> list[str]:
    lines = gauge("askdocs_database_up", "1 when the knowledge base database answered this scrape",
                  [({}, 0 if snapshot is None else 1)])
    if snapshot is not None:
        last = snapshot.last_success
        last_at = (last.finished_at or last.started_at).timestamp() if last else 0.0
        lines += gauge("askdocs_pages", "Current pages in the knowledge base", [({}, snapshot.pages)])
        lines += gauge("askdocs_chunks", "Chunks in the knowledge base", [({}, snapshot.chunks)])
        lines += gauge("askdocs_space_pages", "Current pages per space",
                       [({"space_key": s["space_key"]}, s["pages"]) for s in snapshot.spaces])
        lines += gauge("askdocs_space_chunks", "Chunks per space",
                       [({"space_key": s["space_key"]}, s["chunks"]) for s in snapshot.spaces])
        lines += gauge("askdocs_last_successful_sync_timestamp_seconds",
                       "Unix time the last successful sync finished (0: never)", [({}, last_at)])
        lines += gauge("askdocs_sync_running", "1 while a sync run holds the lock",
                       [({}, 0 if snapshot.running is None else 1)])
    if next_sync_at is not None:
        lines += gauge("askdocs_next_sync_timestamp_seconds", "Unix time of the next scheduled sync",
                       [({}, next_sync_at.timestamp())])
    return lines


# ---- middleware -----------------------------------------------------------------------------------------

def json_errors(redact: Callable[[str], str]) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as error:
            return error_response(error.status, redact(error.message), **error.extra)
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


# ---- handlers -------------------------------------------------------------------------------------------

class ApiHandlers:
    def __init__(self, services: Services, *, next_sync_at: NextSyncAt | None, health_timeout_s: float,
                 redact: Callable[[str], str]) -> None:
        self._services = services
        self._next_sync_at = next_sync_at or (lambda: None)
        self._timeout_s = health_timeout_s
        self._redact = redact

    async def healthz(self, request: web.Request) -> web.Response:
        try:
            snapshot = await read_snapshot(self._services.database.pool, timeout_s=self._timeout_s)
        except Exception as error:  # whatever it is, the database is not serving us
            return web.json_response(
                {"ok": False, "database": "down", "error": self._describe(error), "status": 503}, status=503
            )
        last = snapshot.last_success
        return web.json_response({
            "ok": True, "database": "up", "pages": snapshot.pages, "chunks": snapshot.chunks,
            "spaces": {s["space_key"]: {"pages": s["pages"], "chunks": s["chunks"],
                                        "last_synced_at": iso(s["last_synced_at"])} for s in snapshot.spaces},
            "last_successful_sync_at": iso((last.finished_at or last.started_at) if last else None),
            "running_sync_id": snapshot.running.id if snapshot.running else None,
            "next_sync_at": iso(self._next_sync_at()),
            "embedding_model": self._services.embedder.model_name,
            "answer_mode": self._services.engine.mode,
        })

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics(self, request: web.Request) -> web.Response:
        try:
            snapshot: Snapshot | None = await read_snapshot(self._services.database.pool,
                                                            timeout_s=self._timeout_s)
        except Exception as error:
            logger.warning("metrics: database unreachable: %s", self._describe(error))
            snapshot = None
        text = self._services.metrics.render() + "\n".join(snapshot_gauges(snapshot, self._next_sync_at()))
        return web.Response(body=(text + "\n").encode(), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})

    async def query(self, request: web.Request) -> web.Response:
        try:
            asked = parse(QueryRequest, await read_body(request))
        except ApiError:
            self._count_error("bad_request")
            raise
        try:
            answer = await self._services.engine.answer(
                asked.question, spaces=asked.spaces or None, context=AskContext(surface="api")
            )
        except QuestionError as error:
            self._count_error("bad_request")
            raise ApiError(400, str(error)) from None
        except EmbeddingError as error:
            self._count_error("embedding")
            raise ApiError(502, f"the embedding service failed: {error}") from None
        except DATABASE_UNREACHABLE:
            self._count_error("database")
            raise
        except Exception:
            self._count_error("internal")
            raise
        if self._services.freshness is not None:
            answer = await self._services.freshness.fresh_answer(
                answer, lambda: self._services.engine.answer(
                    asked.question, spaces=asked.spaces or None, context=AskContext(surface="api")),
                wait_s=10.0,
            )
        return web.json_response(answer.to_json(), dumps=dumps)

    async def start_sync(self, request: web.Request) -> web.Response:
        wait = parse_flag(request.query.get("wait"), name="wait")
        body = await read_body(request, allow_empty=True)
        wanted = parse(SyncRequest, body)
        # The tutorial's clients send `space_keys` (sometimes null) and expect the finished run back.
        answer_when_done = wait or "space_keys" in body
        settings = self._services.settings
        spaces = wanted.spaces or wanted.space_keys or settings.confluence_spaces
        if not spaces:
            raise ApiError(400, 'spaces: none given and CONFLUENCE_SPACES is empty')
        if not settings.confluence_configured:
            raise ApiError(503, NOT_CONFIGURED)
        started = await self._services.sync.start(
            spaces=spaces, force=wanted.force, trigger="api", requested_by="api"
        )
        if isinstance(started, AlreadyRunning):
            raise already_running(started)
        if not answer_when_done:
            return web.json_response({"run_id": started.run_id, "status": "running", "spaces": spaces,
                                      "force": wanted.force}, status=202)
        outcome = await wait_for_run(started)
        if outcome.status == "failed":
            why = outcome.error or "; ".join(f"{key}: {text}" for key, text in outcome.failed_spaces.items())
            raise ApiError(502, f"sync #{outcome.run_id} failed: {why}", run_id=outcome.run_id,
                           **outcome.counters())
        return web.json_response(compat_summary(outcome), dumps=dumps)

    async def sync_run(self, request: web.Request) -> web.Response:
        run_id = int(request.match_info["run_id"])
        async with self._services.database.pool.acquire() as conn:
            run = await runs.run_by_id(conn, run_id)
            failures = await runs.run_failures(conn, run_id) if run is not None else []
        if run is None:
            raise ApiError(404, f"no sync run #{run_id}")
        return web.json_response({**run_json(run), "failures": failures}, dumps=dumps)

    def _count_error(self, reason: str) -> None:
        self._services.metrics.inc("askdocs_question_errors_total", help="Questions that got an error",
                                   surface="api", reason=reason)

    def _describe(self, error: BaseException) -> str:
        if isinstance(error, TimeoutError):
            return f"no answer within {self._timeout_s:g}s"
        return self._redact(f"{type(error).__name__}: {error}")


def already_running(busy: AlreadyRunning) -> ApiError:
    run = busy.run
    if run is None:
        return ApiError(409, "a sync is already running (in another process)")
    who = run.requested_by or run.trigger
    return ApiError(409, f"sync #{run.id} is already running, started by {who} at "
                         f"{run.started_at.isoformat(timespec='seconds')}",
                    run_id=run.id, requested_by=run.requested_by, trigger=run.trigger,
                    started_at=iso(run.started_at))


async def wait_for_run(started: StartedRun) -> RunOutcome:
    try:
        return await started.wait()
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if started.task.cancelled() and current is not None and not current.cancelling():
            # The run was cancelled by a shutdown, not this request.
            raise ApiError(503, f"sync #{started.run_id} was cancelled: askdocs is shutting down",
                           run_id=started.run_id) from None
        raise


def build_api(
    services: Services, *, next_sync_at: NextSyncAt | None = None, health_timeout_s: float = 2.0
) -> web.Application:
    """The aiohttp app; the caller binds it (bot.runtime) or wraps it in a test server."""
    redact = RedactSecrets(services.settings.secrets()).redact
    key = services.settings.api_key.get_secret_value() if services.settings.api_key else None
    handlers = ApiHandlers(services, next_sync_at=next_sync_at, health_timeout_s=health_timeout_s,
                           redact=redact)
    for reason in QUESTION_ERROR_REASONS:  # zero series, so rate() and alerts work before the first error
        services.metrics.inc("askdocs_question_errors_total", 0, help="Questions that got an error",
                             surface="api", reason=reason)
    app = web.Application(middlewares=[json_errors(redact), require_api_key(key or None)])
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get("/api/health", handlers.health)
    app.router.add_post("/api/query", handlers.query)
    app.router.add_post("/api/sync", handlers.start_sync)
    app.router.add_get(r"/api/sync/{run_id:\d{1,18}}", handlers.sync_run)
    return app
