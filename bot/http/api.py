"""The HTTP API: /healthz, /metrics, /api/query, /api/sync — one JSON error shape, an API key on /api/*.

Also keeps the routes of the widely copied FastAPI tutorial working unchanged: `GET /api/health`,
`POST /api/sync` with `{"space_keys": [...], "force": bool}` (answered when the run is complete, as is
`?wait=true`) and `POST /api/query` with `{"question"}`.

Without API_KEY the process binds 127.0.0.1 only (see bot.runtime) and no key is asked for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from bot.answering.models import AskContext, QuestionError
from bot.http.middleware import json_errors, require_api_key
from bot.http.requests import ApiError, QueryRequest, SyncRequest, dumps, parse, parse_flag, read_body
from bot.logs import RedactSecrets
from bot.operations.metrics import CONTENT_TYPE
from bot.operations.scheduler import NextSyncAt
from bot.operations.status import KnowledgeBaseStatus, read_status
from bot.operations.sync_runner import AlreadyRunning, RunOutcome, StartedRun
from bot.services import Services
from db import runs
from db.errors import DATABASE_UNREACHABLE
from db.models import SyncRun
from ingest.embedders import EmbeddingError
from ingest.errors import one_line

logger = logging.getLogger(__name__)

SlackState = Callable[[], dict[str, Any]]  # the Slack connection as /healthz shows it (bot.runtime)
SYNC_POLL_S = 0.2  # how often a waiting sync request tries the lock again
NOT_CONFIGURED = ("Confluence is not configured: set CONFLUENCE_BASE_URL with CONFLUENCE_EMAIL + "
                  "CONFLUENCE_API_TOKEN (Cloud) or CONFLUENCE_PAT (Data Center)")



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


# ---- handlers -------------------------------------------------------------------------------------------

class ApiHandlers:
    def __init__(self, services: Services, *, next_sync_at: NextSyncAt | None, health_timeout_s: float,
                 redact: Callable[[str], str], sync_wait_s: float = 600.0,
                 slack_state: SlackState | None = None) -> None:
        self._services = services
        self._slack_state = slack_state
        self._sync_wait_s = sync_wait_s
        self._next_sync_at = next_sync_at or (lambda: None)
        self._timeout_s = health_timeout_s
        self._redact = redact

    async def healthz(self, request: web.Request) -> web.Response:
        try:
            status = await self._status()
        except Exception as error:  # whatever it is, the database is not serving us
            return web.json_response(
                {"ok": False, "database": "down", "error": self._describe(error), "status": 503}, status=503
            )
        last = status.last_success
        return web.json_response({
            "ok": True, "database": "up", "pages": status.pages, "chunks": status.chunks,
            "spaces": {s.space_key: {"pages": s.pages, "chunks": s.chunks,
                                     "last_synced_at": iso(s.last_synced_at)} for s in status.spaces},
            "last_successful_sync_at": iso((last.finished_at or last.started_at) if last else None),
            "running_sync_id": status.running_sync.id if status.running_sync else None,
            "next_sync_at": iso(status.next_sync_at),
            "embedding_model": self._services.embedder.model_name,
            "answer_mode": self._services.engine.mode,
            "slack": self._slack_state() if self._slack_state is not None else {"state": "off"},
        })

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics(self, request: web.Request) -> web.Response:
        status: KnowledgeBaseStatus | None
        try:
            status = await self._status()
        except Exception as error:
            logger.warning("metrics: database unreachable: %s", self._describe(error))
            status = None
        text = self._services.metrics.render(status, next_sync_at=self._next_sync_at())
        return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})

    async def query(self, request: web.Request) -> web.Response:
        try:
            asked = parse(QueryRequest, await read_body(request))
        except ApiError:
            self._count_error("bad_request")
            raise
        try:
            audience = await self._services.identity.for_email(asked.as_user)
            answer = await self._services.engine.answer(
                asked.question, spaces=asked.spaces or None, context=AskContext(surface="api"), audience=audience
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
                    asked.question, spaces=asked.spaces or None, context=AskContext(surface="api"),
                    audience=audience),
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
        if isinstance(started, AlreadyRunning) and answer_when_done:
            started = await self._start_when_free(started, spaces=spaces, force=wanted.force)
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

    async def _start_when_free(self, busy: AlreadyRunning, *, spaces: list[str], force: bool) -> StartedRun:
        """Wait (bounded) for the running sync to end, then start ours: the tutorial's Quick Start posts right
        after start-up, while the start-up sync holds the lock (issue 16)."""
        deadline = time.monotonic() + self._sync_wait_s
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(SYNC_POLL_S, left))
            started = await self._services.sync.start(spaces=spaces, force=force, trigger="api", requested_by="api")
            if isinstance(started, StartedRun):
                return started
            busy = started
        refusal = already_running(busy)
        raise ApiError(409, f"{refusal.message}; still running after waiting {self._sync_wait_s:g} s, try again "
                            "later", **refusal.extra)

    async def sync_run(self, request: web.Request) -> web.Response:
        run_id = int(request.match_info["run_id"])
        async with self._services.database.pool.acquire() as conn:
            run = await runs.run_by_id(conn, run_id)
            failures = await runs.run_failures(conn, run_id) if run is not None else []
        if run is None:
            raise ApiError(404, f"no sync run #{run_id}")
        return web.json_response({**run_json(run), "failures": failures}, dumps=dumps)

    async def _status(self) -> KnowledgeBaseStatus:
        """A health check must answer quickly: TimeoutError past the timeout."""
        settings = self._services.settings
        return await read_status(
            self._services.database.pool, configured_model=settings.resolved_embedding_model,
            configured_spaces=settings.confluence_spaces, next_sync_at=self._next_sync_at(),
            timeout_s=self._timeout_s,
        )

    def _count_error(self, reason: str) -> None:
        self._services.metrics.question_failed(surface="api", reason=reason)

    def _describe(self, error: BaseException) -> str:
        if isinstance(error, TimeoutError):
            return f"no answer within {self._timeout_s:g}s"
        return self._redact(f"{type(error).__name__}: {one_line(error)}")


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
    services: Services, *, next_sync_at: NextSyncAt | None = None, health_timeout_s: float = 2.0,
    sync_wait_s: float = 600.0, slack_state: SlackState | None = None,
) -> web.Application:
    """The aiohttp app; the caller binds it (bot.runtime) or wraps it in a test server.

    `sync_wait_s` bounds how long a tutorial-shaped sync request waits for a running sync before its own.
    """
    redact = RedactSecrets(services.settings.secrets()).redact
    key = services.settings.api_key.get_secret_value() if services.settings.api_key else None
    handlers = ApiHandlers(services, next_sync_at=next_sync_at, health_timeout_s=health_timeout_s,
                           redact=redact, sync_wait_s=sync_wait_s, slack_state=slack_state)
    app = web.Application(middlewares=[json_errors(redact), require_api_key(key or None)])
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get("/api/health", handlers.health)
    app.router.add_post("/api/query", handlers.query)
    app.router.add_post("/api/sync", handlers.start_sync)
    app.router.add_get(r"/api/sync/{run_id:\d{1,18}}", handlers.sync_run)
    return app
