"""`askdocs run` when Slack can't be reached at start: the API and the scheduler keep running, Slack is retried
with backoff and /healthz says how the connection stands; a refused token still stops the process (issue 16)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from bot.runtime import Backoff, serve
from bot.services import build_services
from bot.settings import Settings
from tests.conftest import FAST_RETRY
from tests.emulators.slack import SlackEmulator

FAST = Backoff(first_s=0.5, max_s=1.0)


@pytest.fixture
async def slack() -> AsyncIterator[SlackEmulator]:
    async with SlackEmulator() as emulator:
        yield emulator


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def healthz_until(url: str, ready: Callable[[dict[str, Any]], bool], timeout_s: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"{url}/healthz") as response:
                    health: dict[str, Any] = await response.json()
                    if ready(health):
                        return health
            except aiohttp.ClientConnectionError:
                pass  # not listening yet
            assert time.monotonic() < deadline, "healthz never got there"
            await asyncio.sleep(0.05)


def settings_for(make_settings: Callable[..., Settings], slack: SlackEmulator, port: int) -> Settings:
    return make_settings(slack_bot_token=slack.bot_token, slack_app_token=slack.app_token,
                         slack_api_url=slack.base_url, api_port=port, sync_interval_hours=24)


async def test_slack_down_at_start_is_retried_while_the_api_and_scheduler_serve(
    make_settings: Callable[..., Settings], slack: SlackEmulator
) -> None:
    slack.fail_next("auth.test", "service_unavailable", n=3)
    port = free_port()
    settings = settings_for(make_settings, slack, port)
    stop = asyncio.Event()
    async with build_services(settings, confluence_retry=FAST_RETRY) as services:
        serving = asyncio.create_task(serve(settings, services, stop, slack_backoff=FAST))
        try:
            url = f"http://127.0.0.1:{port}"
            retrying = await healthz_until(url, lambda h: h["slack"]["state"] == "retrying")
            assert retrying["ok"] and retrying["database"] == "up"  # the API serves meanwhile
            assert retrying["next_sync_at"] is not None  # and the scheduler runs
            assert "service_unavailable" in retrying["slack"]["error"]
            connected = await healthz_until(url, lambda h: h["slack"]["state"] == "connected")
            assert connected["slack"]["attempts"] == 4 and not serving.done()
            assert any(call.method == "apps.connections.open" for call in slack.calls)
        finally:
            stop.set()
            assert await asyncio.wait_for(serving, 20) is True


async def test_a_refused_slack_token_stops_the_process(
    make_settings: Callable[..., Settings], slack: SlackEmulator
) -> None:
    slack.fail_next("auth.test", "invalid_auth")
    settings = settings_for(make_settings, slack, free_port())
    stop = asyncio.Event()
    async with build_services(settings, confluence_retry=FAST_RETRY) as services:
        assert await asyncio.wait_for(serve(settings, services, stop, slack_backoff=FAST), 20) is False
    assert stop.is_set()
