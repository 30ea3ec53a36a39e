"""Confluence rate limits are account-wide: one client's workers wait out a window together (issue 16).

The emulator enforces windows as Atlassian does (every request of the account is rejected while one is open)
and counts violations: requests that arrive inside an open window after the client was told to wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from bot.operations.sync_runner import RunOutcome, SyncRunner
from bot.services import Services
from ingest.confluence import ConfluenceClient, RetryPolicy
from ingest.errors import ConfluenceBlocked
from ingest.sync import SyncOptions
from tests.emulators.confluence import ConfluenceEmulator
from tests.emulators.openai import OpenAIEmulator
from tests.wiki import add_team_pages

EMAIL, TOKEN = "bot@example.com", "confluence-secret-token"  # as in conftest
# Windows are a few hundred milliseconds, so waits are honoured in full (max_retry_after_s above them).
# 20 attempts: requests already on the wire when a window opens are rejected too (excused, not violations), and on
# a loaded 2-core CI machine one page's requests were once caught that way 10 times in a row.
POLICY = RetryPolicy(attempts=20, base_delay_s=0.01, max_delay_s=0.05, max_retry_after_s=2.0,
                     near_limit_interval_s=0.1)


def client_factory(confluence: ConfluenceEmulator, policy: RetryPolicy = POLICY) -> Callable[[], ConfluenceClient]:
    def build() -> ConfluenceClient:
        assert confluence.base_url is not None
        return ConfluenceClient(confluence.base_url, email=EMAIL, api_token=TOKEN, retry=policy,
                                max_concurrency=4)

    return build


def embedding_takes_time(openai: OpenAIEmulator, pages: int) -> None:
    """Workers spend a while between requests, as with a real model: windows open while they embed."""
    for _ in range(pages):
        openai.delay_next("embeddings", 0.08)


async def sync_all(services: Services, confluence: ConfluenceEmulator) -> RunOutcome:
    runner = SyncRunner(pool=services.database.pool, embedder=services.embedder,
                        source_factory=client_factory(confluence), default_spaces=["ENG"],
                        options=SyncOptions(concurrency=4))
    outcome = await runner.run(spaces=["ENG"], trigger="cli", requested_by="test")
    assert isinstance(outcome, RunOutcome)
    return outcome


async def test_a_sync_under_enforced_429_windows_sends_nothing_into_a_window_and_loses_no_page(
    confluence: ConfluenceEmulator, openai_emulator: OpenAIEmulator, services: Services
) -> None:
    add_team_pages(confluence, "ENG", 40)
    embedding_takes_time(openai_emulator, 40)
    window = confluence.enforce_rate_limit(window_s=0.3, reject_fraction=0.2)
    outcome = await sync_all(services, confluence)
    assert window.windows_opened >= 3  # the fault really fired
    assert window.violations == 0
    assert outcome.status == "succeeded", outcome.report.failures
    assert outcome.report.pages_added == 40 and outcome.report.pages_failed == 0


async def test_503_bursts_with_retry_after_pause_every_worker(
    confluence: ConfluenceEmulator, openai_emulator: OpenAIEmulator, services: Services
) -> None:
    add_team_pages(confluence, "ENG", 24)
    embedding_takes_time(openai_emulator, 24)
    window = confluence.enforce_rate_limit(window_s=0.3)
    for _ in range(3):  # each burst reopens the window as soon as the last one ends
        confluence.fail_next(4, status=503, retry_after="0.3", path_contains="/rest/api/content/")
    outcome = await sync_all(services, confluence)
    assert window.windows_opened >= 4
    assert window.violations == 0
    assert outcome.status == "succeeded", outcome.report.failures
    assert outcome.report.pages_added == 24


async def test_x_ratelimit_reset_is_the_window_when_retry_after_is_missing(confluence: ConfluenceEmulator) -> None:
    ids = [confluence.add_page("ENG", f"Page {n}", f"<p>body {n}</p>") for n in range(12)]
    window = confluence.enforce_rate_limit(window_s=0.3, reject_fraction=0.2, retry_after_header=False)
    async with client_factory(confluence)() as client:
        pages = await asyncio.gather(*(client.fetch_page(p) for p in ids))
    assert [p.page_id for p in pages] == ids
    assert window.windows_opened >= 1
    assert window.violations == 0


async def test_near_limit_spaces_requests_out(confluence: ConfluenceEmulator) -> None:
    ids = [confluence.add_page("ENG", f"Page {n}", f"<p>body {n}</p>") for n in range(5)]
    confluence.near_limit_next(100)
    async with client_factory(confluence)() as client:
        await client.fetch_page(ids[0])  # tells the client it is near the limit
        confluence.arrivals.clear()
        await asyncio.gather(*(client.fetch_page(p) for p in ids[1:]))
    gaps = [b - a for a, b in zip(confluence.arrivals, confluence.arrivals[1:], strict=False)]
    assert len(gaps) >= 3 and min(gaps) >= 0.09  # one request per near_limit_interval_s, not four at once


@pytest.mark.parametrize(
    ("headers", "retry_after", "says"),
    [
        ({"X-RateLimit-Limit": "0"}, None, "X-RateLimit-Limit: 0"),
        ({}, "9223372036854775807", "practically forever"),  # seen in the wild
        ({}, "Wed, 21 Oct 2099 07:28:00 GMT", "longer than askdocs waits"),
        ({}, "900", "900 s"),
    ],
)
async def test_a_blocked_account_is_a_clear_error_at_once(
    confluence: ConfluenceEmulator, headers: dict[str, str], retry_after: str | None, says: str
) -> None:
    page_id = confluence.add_page("ENG", "Home", "<p>hi</p>")
    confluence.fail_next(status=429, retry_after=retry_after, headers=headers)
    started = time.monotonic()
    async with client_factory(confluence, RetryPolicy())() as client:  # production waits: no long sleep
        with pytest.raises(ConfluenceBlocked) as caught:
            await client.fetch_page(page_id)
    assert time.monotonic() - started < 2.0
    assert len(confluence.requests) == 1  # not retried
    assert says in str(caught.value) and "\n" not in str(caught.value)
