"""The sync scheduler on the real service graph: when it runs, and that two of them never sync together."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from bot.operations.scheduler import SyncScheduler, first_run_at, misfire_grace_s
from bot.services import Services, build_services
from bot.settings import Settings
from db.models import SyncRun
from tests.wiki import add_samples

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(hours=24)


def daily_scheduler(services: Services) -> SyncScheduler:
    return SyncScheduler(services.sync, services.database.pool, spaces=services.settings.confluence_spaces,
                         interval_hours=24)


def succeeded_at(moment: datetime) -> SyncRun:
    return SyncRun(id=1, trigger="cli", requested_by=None, spaces=("ENG",), force=False, status="succeeded",
                   started_at=moment - timedelta(minutes=5), finished_at=moment)


@pytest.mark.parametrize(
    ("pages", "last_success", "expected"),
    [
        (0, None, NOW),                                        # empty base, never synced
        (0, succeeded_at(NOW - timedelta(hours=1)), NOW),      # synced, but nothing in it (all deleted)
        (12, None, NOW),                                       # pages, but no successful sync on record
        (12, succeeded_at(NOW - timedelta(hours=30)), NOW),    # stale
        (12, succeeded_at(NOW - timedelta(hours=1)), NOW + timedelta(hours=23)),  # fresh: when due
    ],
)
def test_first_run_is_now_only_when_the_base_is_empty_or_stale(
    pages: int, last_success: SyncRun | None, expected: datetime
) -> None:
    assert first_run_at(now=NOW, interval=DAY, chunks=pages, last_success=last_success) == expected


@asynccontextmanager
async def running(scheduler: SyncScheduler) -> AsyncIterator[SyncScheduler]:
    await scheduler.start()
    try:
        yield scheduler
    finally:
        await scheduler.stop()


async def schedule_runs(services: Services) -> list[asyncpg.Record]:
    async with services.database.pool.acquire() as conn:
        return list(await conn.fetch(
            "SELECT id, status, requested_by, started_at, finished_at FROM sync_runs "
            "WHERE trigger = 'schedule' ORDER BY id"
        ))


async def wait_for_finished_schedule_run(services: Services, timeout_s: float = 20) -> list[asyncpg.Record]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = await schedule_runs(services)
        if rows and all(r["status"] != "running" for r in rows):
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError("no finished scheduled sync")


async def test_empty_knowledge_base_syncs_at_once(services: Services, confluence: Any) -> None:
    add_samples(confluence)
    async with running(daily_scheduler(services)) as scheduler:
        [run] = await wait_for_finished_schedule_run(services)
        assert run["status"] == "succeeded" and run["requested_by"] == "scheduler"
        next_run = scheduler.next_run_at()
        assert next_run is not None
        assert timedelta(hours=23.9) < next_run - datetime.now(UTC) <= DAY
    assert scheduler.next_run_at() is None


async def test_recent_sync_is_not_repeated_and_the_job_coalesces(services: Services, confluence: Any) -> None:
    add_samples(confluence)
    outcome = await services.sync.run(spaces=["ENG"], trigger="cli", requested_by="test")
    assert getattr(outcome, "status", None) == "succeeded"

    async with running(daily_scheduler(services)) as scheduler:
        job = scheduler.job
        assert job is not None
        assert job.coalesce is True and job.max_instances == 1
        assert job.misfire_grace_time == misfire_grace_s(24) == 3600
        assert job.trigger.interval == DAY
        next_run = scheduler.next_run_at()
        assert next_run is not None and next_run - datetime.now(UTC) > timedelta(hours=23.9)
        await asyncio.sleep(0.3)  # a run due now would have started by now
        assert await schedule_runs(services) == []


async def test_stale_sync_runs_again_on_start(services: Services, confluence: Any) -> None:
    add_samples(confluence)
    await services.sync.run(spaces=["ENG"], trigger="cli", requested_by="test")
    async with services.database.pool.acquire() as conn:
        await conn.execute("UPDATE sync_runs SET started_at = started_at - interval '2 days', "
                           "finished_at = finished_at - interval '2 days'")
    async with running(daily_scheduler(services)):
        [run] = await wait_for_finished_schedule_run(services)
        assert run["status"] == "succeeded"


async def test_two_schedulers_on_one_database_sync_one_at_a_time(
    services: Services, make_settings: Callable[..., Settings], confluence: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.operations.scheduler")
    add_samples(confluence)
    confluence.slow_next(1.0)  # keeps the first run holding the lock while the other scheduler fires
    async with build_services(make_settings()) as other:
        first, second = daily_scheduler(services), daily_scheduler(other)
        async with running(first), running(second):
            rows = await wait_for_finished_schedule_run(services)
            deadline = time.monotonic() + 10
            while not any("scheduled sync skipped" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "the second scheduler never reported its skip"
                await asyncio.sleep(0.05)
    assert len(rows) == 1 and rows[0]["status"] == "succeeded"
    [skip] = [r.getMessage() for r in caplog.records if "scheduled sync skipped" in r.getMessage()]
    assert f"sync #{rows[0]['id']}" in skip or "another process holds the sync lock" in skip


async def test_a_weekly_job_shares_the_scheduler_and_is_coalesced(services) -> None:  # type: ignore[no-untyped-def]

    ran: list[bool] = []

    async def digest() -> bool:
        ran.append(True)
        return True

    scheduler = daily_scheduler(services)
    scheduler.add_weekly(digest, name="knowledge gaps digest")
    job = scheduler._scheduler.get_job("knowledge gaps digest")
    assert job is not None and job.coalesce and job.max_instances == 1
    assert "day_of_week='mon'" in str(job.trigger) and "hour='9'" in str(job.trigger)
    await job.func()
    assert ran == [True]


async def test_permission_refresh_job_rereads_permissions_without_content(make_settings, confluence) -> None:  # type: ignore[no-untyped-def]
    from bot.services import build_services
    from tests.conftest import FAST_RETRY

    add_samples(confluence)
    settings = make_settings(confluence_permissions="per-user", permissions_sync_minutes=15)
    async with build_services(settings, confluence_retry=FAST_RETRY) as services:
        await services.sync.run(trigger="cli")
        scheduler = daily_scheduler(services)
        scheduler.add_every(services.sync.refresh_permissions, name="permission refresh",
                            minutes=settings.permissions_sync_minutes)
        job = scheduler._scheduler.get_job("permission refresh")
        assert job is not None and job.coalesce and job.max_instances == 1
        assert "0:15:00" in str(job.trigger)
        confluence.reset_records()
        await job.func()
        assert confluence.bodies_served == 0 and confluence.count("/permissions") == 1
        async with services.database.pool.acquire() as conn:
            run = await conn.fetchrow("SELECT trigger, status FROM sync_runs ORDER BY id DESC LIMIT 1")
        assert (run["trigger"], run["status"]) == ("permissions", "succeeded")
