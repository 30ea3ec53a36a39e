"""Ops alerts: a finished sync run with failures is summarised in the ops channel (nothing on a clean run)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import quote

from slack_sdk.web.async_client import AsyncWebClient

from bot.operations.sync_runner import RunOutcome
from bot.settings import Settings
from bot.slack import ops_blocks

logger = logging.getLogger(__name__)

PageUrl = Callable[[str], str]


def needs_alert(outcome: RunOutcome) -> bool:
    """Failed pages, failed spaces or a failed run deserve a human's look; a clean run does not."""
    report = outcome.report
    unreadable = outcome.permissions is not None and bool(outcome.permissions.unreadable)
    return outcome.status == "failed" or report.pages_failed + report.attachments_failed > 0 or bool(
        outcome.failed_spaces) or unreadable


def page_url_for(settings: Settings) -> PageUrl | None:
    """A link to a page by id, for failures that carry no URL (the page body was never fetched).

    `viewpage.action?pageId=` works on Cloud (under `/wiki`) and on Data Center (under the context path).
    """
    base = settings.confluence_base_url
    if not base:
        return None
    cloud = settings.confluence_pat is None
    prefix = base + "/wiki" if cloud and not base.endswith("/wiki") else base

    def page_url(page_id: str) -> str:
        return f"{prefix}/pages/viewpage.action?pageId={quote(page_id, safe='')}"

    return page_url


class OpsAlerts:
    """`SyncRunner.on_finished` listener posting to the ops channel; silent when no channel is set."""

    def __init__(
        self, client: AsyncWebClient, channel: str | None, *, page_url: PageUrl | None = None,
    ) -> None:
        self._client = client
        self._channel = channel
        self._page_url = page_url

    async def __call__(self, outcome: RunOutcome) -> None:
        if not self._channel or not needs_alert(outcome):
            return
        message = ops_blocks.ops_alert(outcome, self._page_url)
        await self._client.chat_postMessage(channel=self._channel, **message)
        logger.info("sync #%s %s: alert posted to %s", outcome.run_id, outcome.status, self._channel)
