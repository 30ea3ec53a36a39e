"""SyncScheduler: sync the configured spaces every SYNC_INTERVAL_HOURS, and at once when the base is stale.

One APScheduler 3.x interval job. Several processes (replicas, a CLI sync) may share the database: the
sync lock in `SyncRunner` decides who runs; a scheduler that loses logs that it skipped and why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.operations.status import read_status
from bot.operations.sync_runner import AlreadyRunning, SyncRunner
from db.errors import DATABASE_UNREACHABLE
from db.models import SyncRun

logger = logging.getLogger(__name__)

JOB_ID = "askdocs-sync"
NextSyncAt = Callable[[], datetime | None]
# A run missed by less than this (process suspended, event loop busy) still runs late, once (coalesced).
MAX_MISFIRE_GRACE_S = 3600


def misfire_grace_s(interval_hours: float) -> int:
    """Half the interval, at most an hour, at least a second."""
    return max(1, min(MAX_MISFIRE_GRACE_S, int(interval_hours * 3600 / 2)))


def first_run_at(
    *, now: datetime, interval: timedelta, chunks: int, last_success: SyncRun | None
) -> datetime:
    """Now when the base is empty (no chunks: never synced, or emptied for another embedding model) or the
    last successful sync is older than the interval; else when due."""
    if chunks == 0 or last_success is None:
        return now
    last = last_success.finished_at or last_success.started_at
    return max(now, last + interval)


class SyncScheduler:
    """Runs the sync runner for every configured space on an interval; `next_run_at()` says when next."""

    def __init__(
        self, runner: SyncRunner, pool: asyncpg.Pool, *, spaces: Sequence[str], interval_hours: float
    ) -> None:
        if interval_hours <= 0:
            raise ValueError("interval_hours must be positive")
        self._runner = runner
        self._pool = pool
        self._interval = timedelta(hours=interval_hours)
        self._interval_hours = interval_hours
        self._spaces = list(spaces)
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._stopped = False

    @property
    def job(self) -> Job | None:
        job: Job | None = self._scheduler.get_job(JOB_ID)
        return job

    async def start(self) -> None:
        """Schedule the job; its first run is now when the knowledge base is empty or stale."""
        if self._scheduler.running or self._stopped:
            return
        first = await self._first_run_at()
        self._scheduler.add_job(
            self.run_once,
            trigger=IntervalTrigger(hours=self._interval_hours, timezone=UTC),
            id=JOB_ID,
            name="sync configured Confluence spaces",
            next_run_time=first,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=misfire_grace_s(self._interval_hours),
            replace_existing=True,
        )
        self._scheduler.start()
        logger.info("sync scheduled every %gh for %s; next run %s", self._interval_hours,
                    ", ".join(self._spaces) or "(no spaces)", first.isoformat(timespec="seconds"))

    def add_weekly(self, job: Callable[[], Awaitable[object]], *, name: str, day_of_week: str = "mon",
                   hour: int = 9) -> None:
        """Another job on the same scheduler, weekly at `hour`:00 UTC (e.g. the knowledge-gaps digest)."""
        self._scheduler.add_job(
            _logged(job, name), trigger=CronTrigger(day_of_week=day_of_week, hour=hour, timezone=UTC), id=name,
            name=name, coalesce=True, max_instances=1, misfire_grace_time=3600, replace_existing=True,
        )

    def add_daily(self, job: Callable[[], Awaitable[object]], *, name: str, hour: int = 3) -> None:
        """Another job on the same scheduler, daily at `hour`:00 UTC (e.g. query-log retention)."""
        self._scheduler.add_job(
            _logged(job, name), trigger=CronTrigger(hour=hour, timezone=UTC), id=name, name=name,
            coalesce=True, max_instances=1, misfire_grace_time=3600, replace_existing=True,
        )

    def add_every(self, job: Callable[[], Awaitable[object]], *, name: str, minutes: float) -> None:
        """Another job on the same scheduler, every `minutes` (e.g. the permission refresh, issue 15)."""
        self._scheduler.add_job(
            _logged(job, name), trigger=IntervalTrigger(minutes=minutes, timezone=UTC), id=name, name=name,
            coalesce=True, max_instances=1, misfire_grace_time=max(1, int(minutes * 30)), replace_existing=True,
        )

    async def stop(self) -> None:
        """Stop scheduling new runs (a run in flight is the SyncRunner's to finish or cancel)."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
            await asyncio.sleep(0)  # AsyncIOScheduler shuts down on the loop's next turn
        self._stopped = True

    def next_run_at(self) -> datetime | None:
        job = self.job
        if self._stopped or job is None:
            return None
        next_run: datetime | None = job.next_run_time
        return next_run

    async def run_once(self) -> None:
        """The job: start a run and wait for it, so `max_instances=1` means one run per process."""
        try:
            started = await self._runner.start(
                spaces=self._spaces, trigger="schedule", requested_by="scheduler"
            )
        except DATABASE_UNREACHABLE as error:
            # The next tick tries again; a traceback per tick would bury the one line that matters.
            logger.error("scheduled sync could not start: database unreachable: %s: %s",
                         type(error).__name__, error)
            return
        if isinstance(started, AlreadyRunning):
            logger.info("scheduled sync skipped: %s", describe_holder(started))
            return
        try:
            outcome = await started.wait()
        except asyncio.CancelledError:
            # Shutdown: APScheduler cancels its job tasks. The run itself is shielded and belongs to the
            # SyncRunner, which lets it finish the current page or roll back (SyncRunner.cancel()).
            logger.info("scheduler stopped while sync #%s was running", started.run_id)
            return
        logger.info("scheduled sync #%s finished: %s", outcome.run_id, outcome.status)

    async def _first_run_at(self) -> datetime:
        status = await read_status(self._pool)
        return first_run_at(now=datetime.now(UTC), interval=self._interval, chunks=status.chunks,
                            last_success=status.last_success)


def _logged(job: Callable[[], Awaitable[object]], name: str) -> Callable[[], Awaitable[None]]:
    """The job, its failures logged rather than left to APScheduler's own reporting."""

    async def run() -> None:
        try:
            await job()
        except Exception:
            logger.exception("%s failed", name)

    return run


def describe_holder(busy: AlreadyRunning) -> str:
    """'sync #12 (api by U123) has been running since …' or why we can't say more."""
    run = busy.run
    if run is None:
        return "another process holds the sync lock"
    who = run.requested_by or "-"
    since = run.started_at.isoformat(timespec="seconds")
    return f"sync #{run.id} ({run.trigger} by {who}) has held the lock since {since}"
