"""A sync converting a 2 MB page leaves the event loop free: Slack acks, /healthz and answers keep flowing
(issue 16: parsing and chunking on the loop stalled it for seconds). bench/loop_stall.py measures more."""

from __future__ import annotations

import asyncio
import time

from bot.operations.sync_runner import StartedRun
from bot.services import Services
from tests.emulators.confluence import ConfluenceEmulator
from tests.test_bad_input import big_page


async def test_a_2_mb_page_is_converted_without_stalling_the_loop(
    services: Services, confluence: ConfluenceEmulator
) -> None:
    body, _ = big_page()
    confluence.add_page("ENG", "Service catalogue", body)
    stalls: list[float] = []

    async def tick() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            stalls.append(time.perf_counter() - before - 0.01)

    ticker = asyncio.create_task(tick())
    try:
        started = await services.sync.start(spaces=["ENG"], trigger="cli")
        assert isinstance(started, StartedRun)
        outcome = await started.wait()
    finally:
        ticker.cancel()
    assert outcome.status == "succeeded" and outcome.report.pages_added == 1
    assert outcome.report.chunks_embedded > 100  # the big page really went through
    assert max(stalls) < 0.5  # on the loop, parsing alone held it for over a second
