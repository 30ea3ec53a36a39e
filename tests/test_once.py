"""Work one replica does for all: the weekly digest, scheduled by every replica, is posted once (issue 16)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from slack_sdk.web.async_client import AsyncWebClient

from bot.operations.once import once_per_week
from bot.slack.digest import post_gaps_digest
from tests.emulators.slack import SlackEmulator
from tests.test_gaps import ask_gap_questions


async def test_two_replicas_post_the_weekly_digest_once(services, confluence) -> None:  # type: ignore[no-untyped-def]
    await ask_gap_questions(services, confluence)
    pool = services.database.pool
    async with SlackEmulator() as slack:
        replicas = [AsyncWebClient(token=slack.bot_token, base_url=slack.base_url) for _ in range(2)]

        def digest_by(client: AsyncWebClient):  # type: ignore[no-untyped-def]
            return lambda: post_gaps_digest(pool, services.embedder, client, "C1")

        monday = datetime(2026, 11, 30, 9, tzinfo=UTC)
        posted = await asyncio.gather(*(once_per_week(pool, "knowledge gaps digest", digest_by(c), now=monday)
                                        for c in replicas))
        assert sorted(posted) == [False, True]
        assert len(slack.calls_of("chat.postMessage")) == 1
        # A late run the same week (a restart) stays quiet; next week's digest goes out.
        assert await once_per_week(pool, "knowledge gaps digest", digest_by(replicas[0]),
                                   now=monday + timedelta(days=3)) is False
        assert await once_per_week(pool, "knowledge gaps digest", digest_by(replicas[1]),
                                   now=monday + timedelta(days=7)) is True
        assert len(slack.calls_of("chat.postMessage")) == 2
