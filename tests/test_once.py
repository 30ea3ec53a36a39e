"""Work one replica does for all: the weekly digest, scheduled by every replica, is posted once (issue 16)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from slack_sdk.web.async_client import AsyncWebClient

from bot.operations.once import once_per_week
from bot.services import build_services
from bot.slack.app import SlackBot
from bot.slack.digest import post_gaps_digest
from tests.emulators.slack import SlackEmulator
from tests.test_gaps import ask_gap_questions
from tests.wiki import add_samples


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


async def test_a_message_redelivered_to_the_other_replica_is_answered_once(
    make_settings, confluence,  # type: ignore[no-untyped-def]
) -> None:
    """Slack redelivers an event whose ack was slow to any open connection; two replicas share a database."""
    add_samples(confluence)
    async with SlackEmulator() as slack:
        settings = make_settings(slack_bot_token=slack.bot_token, slack_app_token=slack.app_token,
                                 slack_api_url=slack.base_url)
        async with build_services(settings) as first, build_services(settings) as second:
            assert (await first.sync.run(spaces=["ENG"], trigger="cli")).status == "succeeded"
            replicas = [SlackBot(first), SlackBot(second)]
            for n, replica in enumerate(replicas, start=1):
                await replica.start()
                await slack.wait_for_connections(n)
            try:
                envelope, ts = await slack.mention("When is the staging database rebuilt?", channel="C1")
                event = slack.sent[envelope]["payload"]
                again = await slack.send_event(event["event"], event_id=event["event_id"], retry_attempt=1,
                                               retry_reason="timeout", connection=0)
                await slack.wait_for_ack(envelope)
                await slack.wait_for_ack(again)
            finally:
                for replica in replicas:
                    await replica.stop()  # drains the answers in flight
        answers = [m for m in slack.messages_in_thread("C1", ts) if m.get("bot_id") == slack.bot_id]
        assert len(answers) == 1 and "Sunday" in str(answers[0])
