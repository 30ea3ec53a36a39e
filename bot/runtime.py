"""`askdocs run`: the HTTP API, the sync scheduler and (with Slack tokens) the Slack bot in one process.

SIGTERM/SIGINT stop it gracefully: stop taking work (scheduler, API listener, Slack), cancel the sync in
flight (a page write is one transaction, so it commits or rolls back whole), close the pool, stop the
embedded database, exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from bot.http.api import build_api
from bot.operations.once import once_per_week
from bot.operations.retention import prune_claims, prune_query_log
from bot.operations.scheduler import SyncScheduler
from bot.services import Services, build_services
from bot.settings import Settings, SettingsError
from db.connect import describe_dsn
from ingest.errors import one_line, safe_url

logger = logging.getLogger(__name__)

RETENTION_JOB = "query log retention"
CLAIMS_RETENTION_JOB = "replica claims retention"
DIGEST_JOB = "knowledge gaps digest"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# Handlers still running when the listener closes get this long to finish before they are cancelled.
API_SHUTDOWN_TIMEOUT_S = 5.0


# Slack's answers when the token itself is refused: retrying cannot help, so the process stops (issue 16).
REFUSED_TOKEN_ERRORS = frozenset({
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "not_allowed_token_type",
})


@dataclass(frozen=True)
class Backoff:
    """Waits between Slack connection attempts; tests shrink them."""

    first_s: float = 2.0
    max_s: float = 120.0


def slack_error_code(error: BaseException) -> str | None:
    """Slack's `error` field of a failed Web API call (SlackApiError.response), without importing slack_sdk."""
    response: Any = getattr(error, "response", None)
    try:
        return str(response["error"])
    except (KeyError, TypeError):
        return None


class SlackConnection:
    """Connects the Slack bot, retrying with backoff while the API and the scheduler keep running.

    A refused token ends the process (`on_refused`); anything else (Slack down, network, 5xx) is retried.
    `state()` is what /healthz reports: connecting, retrying, connected or refused.
    """

    def __init__(self, bot: Bot, *, backoff: Backoff, on_refused: asyncio.Event) -> None:
        self._bot = bot
        self._backoff = backoff
        self._on_refused = on_refused
        self._state = "connecting"
        self._error: str | None = None
        self.attempts = 0

    @property
    def connected(self) -> bool:
        return self._state == "connected"

    @property
    def refused(self) -> bool:
        return self._state == "refused"

    def state(self) -> dict[str, Any]:
        return {"state": self._state, "error": self._error, "attempts": self.attempts}

    async def run(self) -> None:
        delay = self._backoff.first_s
        while True:
            self.attempts += 1
            try:
                await self._bot.start()
            except Exception as error:
                self._error = f"{type(error).__name__}: {one_line(error)}"
                if slack_error_code(error) in REFUSED_TOKEN_ERRORS:
                    self._state = "refused"
                    logger.error("could not connect to Slack, the token was refused: %s", self._error)
                    self._on_refused.set()
                    return
                self._state = "retrying"
                logger.warning("could not connect to Slack (%s); retrying in %.1fs", self._error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff.max_s)
            else:
                self._state, self._error = "connected", None
                return


class Bot(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def post_gaps_digest(self) -> bool: ...


@dataclass
class ApiListener:
    runner: web.AppRunner
    site: web.TCPSite
    url: str

    async def stop_listening(self) -> None:
        await self.site.stop()

    async def close(self) -> None:
        await self.runner.cleanup()


def has_api_key(settings: Settings) -> bool:
    return settings.api_key is not None and settings.api_key.get_secret_value() != ""


def api_host(settings: Settings) -> str:
    """API_HOST only with an API key: an API without one must not be reachable from other machines."""
    if has_api_key(settings):
        return settings.api_host or "0.0.0.0"
    if settings.api_host and settings.api_host not in LOOPBACK_HOSTS:
        logger.warning("API_HOST=%s ignored: no API_KEY is set, so the API listens on 127.0.0.1 only",
                       settings.api_host)
    return "127.0.0.1"


async def serve_api(app: web.Application, *, host: str, port: int) -> ApiListener:
    runner = web.AppRunner(app, shutdown_timeout=API_SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        message = f"configuration error: API_PORT: cannot listen on {host}:{port}: {error}"
        raise SettingsError(message) from None
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound_port}"
    logger.info("askdocs api listening on %s", url)
    return ApiListener(runner, site, url)


def startup_facts(settings: Settings, services: Services) -> list[str]:
    """What this process runs with, without a single secret."""
    database = services.database
    where = (f"embedded PostgreSQL in {settings.askdocs_data_dir}" if database.embedded is not None
             else f"PostgreSQL at {describe_dsn(database.dsn)}")
    embedder = services.embedder
    if services.chat is not None:
        llm = f"LLM {settings.llm_model} at {safe_url(settings.openai_base_url or 'https://api.openai.com/v1')}"
    else:
        llm = "extractive answers (no LLM)"
    confluence = safe_url(settings.confluence_base_url) if settings.confluence_base_url else "not configured"
    return [
        f"database: {where}",
        f"embeddings: {settings.embedding_provider} {embedder.model_name} ({embedder.dimension} dims)",
        f"answers: {llm}",
        f"confluence: {confluence}; spaces: {', '.join(settings.confluence_spaces) or '(none)'}",
        f"sync interval: {settings.sync_interval_hours:g}h",
        f"api key: {'set' if has_api_key(settings) else 'not set (127.0.0.1 only)'}",
        "slack: " + ("socket mode" if settings.slack_configured else "off (no Slack tokens)"),
    ]


def install_signal_handlers(stop: asyncio.Event) -> list[signal.Signals]:
    loop = asyncio.get_running_loop()
    installed = []

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            logger.info("received %s again: already shutting down", sig.name)
            return
        logger.info("received %s: shutting down", sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            pass
    return installed


def build_scheduler(settings: Settings, services: Services) -> SyncScheduler | None:
    if not settings.confluence_configured or not settings.confluence_spaces:
        logger.warning("scheduled sync off: set CONFLUENCE_BASE_URL, its credentials and CONFLUENCE_SPACES")
        return None
    return SyncScheduler(services.sync, services.database.pool, spaces=settings.confluence_spaces,
                         interval_hours=settings.sync_interval_hours)


def build_slack(services: Services, scheduler: SyncScheduler | None) -> Bot:
    from bot.slack.app import SlackBot  # imported only with Slack tokens: slack_bolt is not needed otherwise

    bot: Bot = SlackBot(services, next_sync_at=scheduler.next_run_at if scheduler else None)
    return bot


async def run_forever(settings: Settings, *, stop: asyncio.Event | None = None) -> bool:
    """Serve until SIGTERM/SIGINT (or `stop` is set); False when Slack was configured but never connected."""
    stop = stop or asyncio.Event()
    installed = install_signal_handlers(stop)
    try:
        async with build_services(settings, reembed_on_model_change=True) as services:
            for fact in startup_facts(settings, services):
                logger.info("%s", fact)
            return await serve(settings, services, stop)
    finally:
        loop = asyncio.get_running_loop()
        for sig in installed:
            loop.remove_signal_handler(sig)
        logger.info("askdocs stopped")


async def serve(
    settings: Settings, services: Services, stop: asyncio.Event, *, slack_backoff: Backoff = Backoff()
) -> bool:
    """Serve until `stop`; False when Slack refused the token (the API and scheduler ran meanwhile)."""
    scheduler = build_scheduler(settings, services)
    next_sync_at = scheduler.next_run_at if scheduler else None
    slack = build_slack(services, scheduler) if settings.slack_configured else None
    connection = SlackConnection(slack, backoff=slack_backoff, on_refused=stop) if slack is not None else None
    api = await serve_api(
        build_api(services, next_sync_at=next_sync_at, slack_state=connection.state if connection else None),
        host=api_host(settings), port=settings.api_port,
    )
    connecting = asyncio.create_task(connection.run(), name="askdocs-slack-connect") if connection else None
    try:
        if scheduler is not None:
            await scheduler.start()
            if slack is not None and settings.slack_ops_channel:
                digest = slack.post_gaps_digest
                scheduler.add_weekly(  # every replica schedules it; one posts it (issue 16)
                    lambda: once_per_week(services.database.pool, DIGEST_JOB, digest), name=DIGEST_JOB)
            scheduler.add_daily(
                lambda: prune_query_log(services.database.pool, retention_days=settings.query_log_retention_days),
                name=RETENTION_JOB,
            )
            scheduler.add_daily(lambda: prune_claims(services.database.pool), name=CLAIMS_RETENTION_JOB)
            if settings.per_user_permissions:  # restrictions added without an edit (issue 15)
                scheduler.add_every(services.sync.refresh_permissions, name="permission refresh",
                                    minutes=settings.permissions_sync_minutes)
        await stop.wait()
    finally:
        if connecting is not None:
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
        await shut_down(services, api=api, scheduler=scheduler, slack=slack)
    return connection is None or not connection.refused


async def shut_down(
    services: Services, *, api: ApiListener, scheduler: SyncScheduler | None, slack: Bot | None
) -> None:
    """Stop taking work, then end the work in flight; build_services closes the pool afterwards."""
    logger.info("shutting down: no new syncs, questions or API requests; a sync in flight is cancelled")
    if scheduler is not None:
        await scheduler.stop()
    await api.stop_listening()
    # The sync first: a /docsync listener waits on it, and Slack's drain would otherwise wait for the sync.
    await services.sync.cancel()
    if slack is not None:
        try:
            await slack.stop()
        except Exception as error:
            logger.warning("Slack did not stop cleanly: %s: %s", type(error).__name__, error)
    await api.close()
    logger.info("closing the database pool")
