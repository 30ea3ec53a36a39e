"""The App Home tab: knowledge-base status and how to ask, published when a user opens it."""

from __future__ import annotations

import logging
import secrets

from slack_sdk.web.async_client import AsyncWebClient

from bot.operations.scheduler import NextSyncAt
from bot.operations.status import read_status
from bot.services import Services
from bot.slack import ops_blocks

logger = logging.getLogger(__name__)



class HomeTab:
    def __init__(self, services: Services, *, next_sync_at: NextSyncAt | None = None) -> None:
        self._services = services
        self._next_sync_at = next_sync_at

    async def publish(self, client: AsyncWebClient, user_id: str) -> None:
        """views.publish the status; a database outage shows a short notice instead of nothing."""
        settings = self._services.settings
        try:
            status = await read_status(
                self._services.database.pool, configured_model=settings.resolved_embedding_model,
                configured_spaces=settings.confluence_spaces,
                next_sync_at=self._next_sync_at() if self._next_sync_at else None,
            )
            view = ops_blocks.home_view(status)
        except Exception:
            ref = secrets.token_hex(4)
            logger.exception("could not read the knowledge-base status for the home tab [ref %s]", ref)
            view = ops_blocks.home_unavailable(ref)
        await client.views_publish(user_id=user_id, view=view)
