"""Long-lived HTTP sessions: answers reuse connections to Confluence (freshness) and to Slack (Web API)
instead of opening a session, and a connection, per answer or per call (issue 16)."""

from __future__ import annotations

from pathlib import Path

from bot.services import Services
from db.embedded import EmbeddedPostgres
from tests.emulators.confluence import ConfluenceEmulator
from tests.test_concurrency import VPN_QUESTION, final_message, slack_stack
from tests.wiki import add_samples


async def test_freshness_checks_of_many_answers_share_one_connection(
    services: Services, confluence: ConfluenceEmulator
) -> None:
    add_samples(confluence)
    await services.sync.run(spaces=["ENG"], trigger="cli")
    assert services.freshness is not None
    questions = ["When is the staging database rebuilt?", "How many days of paid annual leave do employees get?",
                 "How do I connect to the VPN?"]
    answers = [await services.engine.answer(q) for q in questions]
    checked_from = len(confluence.peers)
    assert len({a.sources[0].page_id for a in answers}) == 3  # so each check asks Confluence (nothing cached)
    for answer in answers:
        await services.freshness.review(answer)
    peers = confluence.peers[checked_from:]
    assert len(peers) >= 3 and len(set(peers)) == 1


async def test_slack_web_api_calls_reuse_connections(pg_server: EmbeddedPostgres, tmp_path: Path) -> None:
    async with slack_stack(pg_server, tmp_path, setup=add_samples) as stack:
        slack = stack.slack
        await stack.services.sync.run(spaces=["ENG"], trigger="cli")
        since = len(slack.calls)
        for n in range(3):
            _, ts = await slack.mention(f"{VPN_QUESTION} ({n})")
            await final_message(slack, "C1", ts, since=since)
        peers = slack.web_api_peers[since:]
    assert len(peers) >= 6  # at least a post and a final update per answer
    assert len(set(peers)) <= 2  # pooled connections, not one per call
