"""The Slack app: `build_app(services)` → Bolt AsyncApp; `SlackBot` runs it over Socket Mode.

    bot = SlackBot(services)
    await bot.start()   # connects; returns once the Socket Mode connection is open
    ...
    await bot.stop()    # disconnects, lets answers in flight finish
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.operations.scheduler import NextSyncAt
from bot.operations.sync_runner import RunOutcome
from bot.services import Services
from bot.settings import Settings, SettingsError
from bot.slack import blocks
from bot.slack.access import AccessGuard, SlackAccess
from bot.slack.alerts import OpsAlerts, page_url_for
from bot.slack.budget import RateBudget
from bot.slack.digest import post_gaps_digest
from bot.slack.docsync import DocSync
from bot.slack.home import HomeTab
from bot.slack.listeners import SlackListeners
from bot.slack.middleware import AdminOnly, EventFilter, SeenEvents
from bot.slack.streaming import BackgroundTasks, WorkspaceFeatures

logger = logging.getLogger(__name__)


def build_client(settings: Settings, *, session: aiohttp.ClientSession | None = None) -> AsyncWebClient:
    """The bot-token Web API client, aimed at SLACK_API_URL, retrying 429s and dropped connections.

    Without `session`, slack_sdk opens an aiohttp session (and a connection) per call.
    """
    if settings.slack_bot_token is None:
        raise SettingsError("configuration error: SLACK_BOT_TOKEN must be set to run the Slack bot")
    return AsyncWebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        session=session,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
        ],
    )


def build_app(
    services: Services, *, client: AsyncWebClient | None = None, next_sync_at: NextSyncAt | None = None,
    tasks: BackgroundTasks | None = None, identity: AuthorizeResult | None = None,
    budget: RateBudget | None = None,
) -> AsyncApp:
    """A Bolt app with askdocs' middleware and listeners registered (call inside a running event loop).

    With `identity` (the bot's auth.test, read once at start), Bolt doesn't call auth.test per event: after
    a restart, a burst of 50 events otherwise made 50 auth.test calls before their acks (bench/slack_latency).
    """
    settings = services.settings

    async def authorize(**_: Any) -> AuthorizeResult:
        assert identity is not None
        return identity

    app = AsyncApp(client=client or build_client(settings), name="askdocs",
                   authorize=authorize if identity is not None else None)
    tasks = tasks or BackgroundTasks()
    budget = budget or RateBudget()  # one per workspace and method, shared by answers and /docsync
    access = SlackAccess(settings, services.identity)
    listeners = SlackListeners(services, tasks=tasks, home=HomeTab(services, next_sync_at=next_sync_at),
                               budget=budget, features=WorkspaceFeatures(), access=access)
    docsync = DocSync(services.sync, default_spaces=settings.confluence_spaces, tasks=tasks, budget=budget)
    app.middleware(EventFilter(SeenEvents()))
    app.middleware(AccessGuard(access, tasks=tasks))  # guests and other workspaces: refused (issue 15)
    app.event("app_mention")(listeners.on_mention)
    # One listener for every message event (im, channels, groups): Bolt acks only events a listener takes.
    app.event("message")(listeners.on_message)
    app.event("app_home_opened")(listeners.on_home_opened)
    app.command("/askdocs")(listeners.on_askdocs)
    app.command("/docsync", middleware=[AdminOnly(settings.slack_admin_users, blocks.SYNC_REFUSED)])(
        docsync.on_docsync)
    app.action(blocks.FEEDBACK_ACTION_ID)(listeners.on_feedback)
    app.action("feedback_up")(listeners.on_feedback)  # buttons of answers posted before feedback_buttons
    app.action("feedback_down")(listeners.on_feedback)
    return app


class SlackBot:
    """askdocs in Slack over Socket Mode, plus ops alerts for every finished sync run."""

    def __init__(
        self, services: Services, *, next_sync_at: NextSyncAt | None = None, drain_timeout_s: float = 30.0,
        budget: RateBudget | None = None,
    ) -> None:
        self._services = services
        self._budget = budget or RateBudget()
        self._next_sync_at = next_sync_at
        self._drain_timeout_s = drain_timeout_s
        self._tasks = BackgroundTasks()
        self._client: AsyncWebClient | None = None
        self._session: aiohttp.ClientSession | None = None
        self._handler: AsyncSocketModeHandler | None = None
        self._alerts: OpsAlerts | None = None
        services.sync.on_finished(self._on_sync_finished)

    async def start(self) -> None:
        settings = self._services.settings
        if not settings.slack_configured or settings.slack_app_token is None:
            raise SettingsError(
                "configuration error: SLACK_BOT_TOKEN and SLACK_APP_TOKEN must be set to run the Slack bot")
        if self._handler is not None:
            return
        session = aiohttp.ClientSession()  # one connection pool for every Web API call (issue 16)
        try:
            client = build_client(settings, session=session)
            assert settings.slack_bot_token is not None
            identity = AuthorizeResult.from_auth_test_response(
                auth_test_response=await client.auth_test(),
                bot_token=settings.slack_bot_token.get_secret_value(),
            )
            app = build_app(self._services, client=client, next_sync_at=self._next_sync_at, tasks=self._tasks,
                            identity=identity, budget=self._budget)
            handler = AsyncSocketModeHandler(app, settings.slack_app_token.get_secret_value())
            try:
                await handler.connect_async()  # type: ignore[no-untyped-call]
            except BaseException:
                await handler.close_async()  # type: ignore[no-untyped-call]
                raise
        except BaseException:
            await session.close()
            raise
        self._handler, self._session = handler, session
        self._alerts = OpsAlerts(client, settings.slack_ops_channel, page_url=page_url_for(settings))
        self._client = client
        logger.info("Slack bot connected (Socket Mode via %s)", settings.slack_api_url)

    async def post_gaps_digest(self) -> bool:
        """The weekly "what your team asks that Confluence doesn't answer" digest, to the ops channel."""
        channel = self._services.settings.slack_ops_channel
        if self._client is None or not channel:
            return False
        return await post_gaps_digest(self._services.database.pool, self._services.embedder, self._client,
                                      channel)

    async def stop(self) -> None:
        handler, self._handler = self._handler, None
        self._alerts = None
        if handler is not None:
            await handler.close_async()  # type: ignore[no-untyped-call]
        await self._tasks.drain(self._drain_timeout_s)
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _on_sync_finished(self, outcome: RunOutcome) -> None:
        if self._alerts is not None:
            await self._alerts(outcome)
