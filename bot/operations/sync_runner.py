"""run_sync(): the one entry for the scheduler, /docsync, the HTTP API and the CLI.

It takes the cross-process sync lock (or reports who holds it), records the run, syncs each space, records
per-page failures as they happen, and tells the listeners (ops alert, metrics) how it ended.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from db import pages, runs
from db.errors import DATABASE_UNREACHABLE
from db.models import PageVersion, SyncRun
from db.store import AccessStore, SyncStore
from ingest.convert import Converter
from ingest.embedders import Embedder
from ingest.errors import ListingIncomplete, one_line
from ingest.models import PageFailure, SyncReport
from ingest.permissions import PermissionReport, refresh_permissions
from ingest.sync import Progress, SourceFactory, SyncOptions, index_page, sync_space

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class RunOutcome:
    run_id: int
    status: str  # succeeded | partial | failed
    report: SyncReport
    duration_s: float
    trigger: str
    requested_by: str | None
    error: str | None = None
    failed_spaces: dict[str, str] = field(default_factory=dict)
    # CONFLUENCE_PERMISSIONS=per-user: who may read what, re-read at the end of every run (issue 15).
    permissions: PermissionReport | None = None

    def counters(self) -> dict[str, Any]:
        """The run's counters, without the failure count (callers list the failures themselves)."""
        data = run_counters(self.report, self.duration_s, self.failed_spaces)
        del data["failures"]
        return data


@dataclass(frozen=True)
class AlreadyRunning:
    """Another sync holds the lock; `run` says since when and who started it, when known."""

    run: SyncRun | None


@dataclass
class StartedRun:
    run_id: int
    task: asyncio.Task[RunOutcome]

    async def wait(self) -> RunOutcome:
        return await asyncio.shield(self.task)


FinishedCallback = Callable[[RunOutcome], Awaitable[None]]
RunProgressCallback = Callable[[int, Progress], Awaitable[None]]


class SyncRunner:
    """Starts sync runs, one at a time across every process that shares the database."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        embedder: Embedder,
        source_factory: SourceFactory,
        default_spaces: Sequence[str],
        options: SyncOptions = SyncOptions(),
        holder_wait_s: float = 2.0,
        all_users_group: str | None = None,
    ) -> None:
        """`all_users_group` set (CONFLUENCE_PERMISSIONS=per-user): each run ends by re-reading permissions."""
        self._pool = pool
        self._all_users_group = all_users_group
        self._holder_wait_s = holder_wait_s
        self._store = SyncStore(pool)
        self._embedder = embedder
        self._source_factory = source_factory
        self._default_spaces = list(default_spaces)
        self._options = options
        self._listeners: list[FinishedCallback] = []
        self._tasks: set[asyncio.Task[RunOutcome]] = set()
        self._converter = Converter()  # big pages parse in its worker process, started on first use

    def on_finished(self, callback: FinishedCallback) -> None:
        self._listeners.append(callback)

    async def start(
        self,
        *,
        spaces: Sequence[str] = (),
        force: bool = False,
        trigger: str,
        requested_by: str | None = None,
        progress: RunProgressCallback | None = None,
        permissions_only: bool = False,
    ) -> StartedRun | AlreadyRunning:
        """Take the lock and start a run in the background, or say who is running one.

        `permissions_only`: re-read who may read what, fetch no content (PERMISSIONS_SYNC_MINUTES)."""
        chosen = list(spaces) or self._default_spaces
        ready: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            self._locked_run(chosen, force=force, trigger=trigger, requested_by=requested_by,
                             progress=progress, ready=ready, permissions_only=permissions_only),
            name=f"askdocs-sync-{trigger}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        run_id = await ready
        if run_id is None:
            await task
            return AlreadyRunning(await self._lock_holder())
        return StartedRun(run_id=run_id, task=task)

    async def _lock_holder(self) -> SyncRun | None:
        """The run holding the lock. Its holder takes the lock a moment before it writes the run row (a
        pool connection may have to be opened in between), so a refusal waits briefly for that row."""
        deadline = time.monotonic() + self._holder_wait_s
        while True:
            async with self._pool.acquire() as conn:
                run = await runs.running_run(conn)
            if run is not None or time.monotonic() >= deadline:
                return run
            await asyncio.sleep(0.05)

    async def run(self, **kwargs: Any) -> RunOutcome | AlreadyRunning:
        started = await self.start(**kwargs)
        if isinstance(started, AlreadyRunning):
            return started
        return await started.wait()

    async def refresh_permissions(self) -> RunOutcome | AlreadyRunning:
        """Re-read who may read what in the default spaces, fetching no content (PERMISSIONS_SYNC_MINUTES).
        A sync already running re-reads them when it ends, so a refusal here loses nothing."""
        return await self.run(trigger="permissions", permissions_only=True)

    async def refresh_pages(self, page_ids: Sequence[str]) -> list[str]:
        """Re-fetch and re-index a few pages now (answer-time freshness); returns the ids re-indexed.

        Each page is one transaction, so this can run beside a full sync without a lock.
        """
        done: list[str] = []
        report = SyncReport()
        async with self._source_factory() as source:
            for page_id in page_ids:
                try:
                    page = await source.fetch_page(page_id)
                    if page.restricted and not self._options.include_restricted:
                        await self._store.delete_pages([page_id])
                        continue
                    known = await self._store.page(page_id)
                    await index_page(
                        page, known=PageVersion(known.version, known.checksum) if known else None,
                        store=self._store, embedder=self._embedder, options=self._options, report=report,
                        source=source, converter=self._converter,
                    )
                    done.append(page_id)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    logger.warning("refreshing page %s failed: %s", page_id, error)
        logger.info("refreshed %d page(s): %s", len(done), ", ".join(done))
        return done

    async def forget_pages(self, page_ids: Sequence[str]) -> int:
        """Remove pages Confluence no longer has from the index."""
        return await self._store.delete_pages(page_ids)

    async def wait_idle(self) -> None:
        """Let runs in flight finish (used on shutdown after new work stops)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.wait_idle()
        self._converter.close()

    async def _locked_run(
        self, spaces: list[str], *, force: bool, trigger: str, requested_by: str | None,
        progress: RunProgressCallback | None, ready: asyncio.Future[int | None], permissions_only: bool = False,
    ) -> RunOutcome:
        try:
            async with runs.sync_lock(self._pool) as acquired:
                if not acquired:
                    ready.set_result(None)
                    return RunOutcome(0, "skipped", SyncReport(), 0.0, trigger, requested_by)
                async with self._pool.acquire() as conn:
                    run_id = await runs.start_run(
                        conn, trigger=trigger, requested_by=requested_by, spaces=spaces, force=force
                    )
                ready.set_result(run_id)
                outcome = await self._execute(run_id, spaces, force=force, trigger=trigger,
                                              requested_by=requested_by, progress=progress,
                                              permissions_only=permissions_only)
        except BaseException as error:
            if not ready.done():
                ready.set_exception(error)
            raise
        for listener in self._listeners:
            try:
                await listener(outcome)
            except Exception:
                logger.exception("sync listener failed for run %s", outcome.run_id)
        return outcome

    async def _execute(
        self, run_id: int, spaces: list[str], *, force: bool, trigger: str, requested_by: str | None,
        progress: RunProgressCallback | None, permissions_only: bool = False,
    ) -> RunOutcome:
        started = time.monotonic()
        permissions: PermissionReport | None = None
        report = SyncReport(spaces=list(spaces))
        options = dataclasses.replace(self._options, force=force)
        failed_spaces: dict[str, str] = {}
        error: str | None = None
        logger.info("sync #%s started (%s by %s): %s", run_id, trigger, requested_by or "-", ", ".join(spaces))

        async def record(space_key: str, failure: PageFailure) -> None:
            async with self._pool.acquire() as conn:
                await runs.record_failure(
                    conn, run_id, page_id=failure.page_id, space_key=space_key, title=failure.title,
                    url=failure.url, error=failure.error,
                )

        async def report_progress(step: Progress) -> None:
            if progress is not None:
                await progress(run_id, step)

        try:
            async with self._pool.acquire() as conn:
                awaiting = await pages.pages_awaiting_embeddings(conn)
            if awaiting:
                report.warnings.append(
                    f"re-embedding {awaiting} pages with {self._embedder.model_name}: "
                    "the knowledge base was built with another embedding model"
                )
            async with self._source_factory() as source:
                for space_key in [] if permissions_only else spaces:
                    try:
                        await sync_space(
                            space_key, source=source, store=self._store, embedder=self._embedder,
                            report=report, options=options, progress=report_progress, on_failure=record,
                            converter=self._converter,
                        )
                    except ListingIncomplete as incomplete:
                        failed_spaces[space_key] = f"listing incomplete, nothing deleted: {one_line(incomplete)}"
                        logger.warning("sync #%s: space %s: %s", run_id, space_key, failed_spaces[space_key])
                    except asyncio.CancelledError:
                        raise
                    except Exception as space_error:
                        failed_spaces[space_key] = f"{type(space_error).__name__}: {one_line(space_error)}"
                        logger.exception("sync #%s: space %s failed", run_id, space_key)
                    async with self._pool.acquire() as conn:
                        await runs.update_counters(conn, run_id, _counters(report, started, failed_spaces))
                if self._all_users_group is not None:
                    permissions = await refresh_permissions(
                        spaces, source=source,  # type: ignore[arg-type]  # ConfluenceClient reads both
                        store=AccessStore(self._pool), all_users_group=self._all_users_group)
                    for space_key, why in permissions.failed_spaces.items():
                        failed_spaces.setdefault(space_key, why)
        except asyncio.CancelledError:
            error = "cancelled: askdocs was shutting down"
            await self._finish(run_id, "failed", report, started, failed_spaces, error)
            raise
        except Exception as crash:
            error = f"{type(crash).__name__}: {one_line(crash)}"
            logger.exception("sync #%s crashed", run_id)
        if error is None and report.pages_added + report.pages_updated + report.pages_deleted:
            try:
                await self._store.refresh_search_stats()
            except DATABASE_UNREACHABLE as lost:
                error = f"could not refresh search statistics: {one_line(lost)}"
        if error is not None or (failed_spaces and len(failed_spaces) == len(spaces)):
            status = "failed"
        elif failed_spaces or report.pages_failed or report.attachments_failed or (
                permissions is not None and permissions.unreadable):
            status = "partial"
        else:
            status = "succeeded"
        duration = await self._finish(run_id, status, report, started, failed_spaces, error)
        logger.info("sync #%s %s in %.1fs: %s", run_id, status, duration, _counters(report, started, {}))
        return RunOutcome(run_id, status, report, duration, trigger, requested_by, error, failed_spaces,
                          permissions)

    async def _finish(
        self, run_id: int, status: str, report: SyncReport, started: float, failed_spaces: dict[str, str],
        error: str | None,
    ) -> float:
        counters = _counters(report, started, failed_spaces)
        # Shielded: a shutdown must not leave the run row saying 'running'.
        async def write() -> None:
            async with self._pool.acquire() as conn:
                await runs.finish_run(conn, run_id, status=status, counters=counters, error=error)

        try:
            await asyncio.shield(write())
        except DATABASE_UNREACHABLE as lost:
            # The run still ends as reported; the next sync closes this row as interrupted.
            logger.warning("sync #%s: could not record its end, the database is unreachable: %s", run_id, lost)
        return float(counters["duration_s"])


def run_counters(report: SyncReport, duration_s: float, failed_spaces: dict[str, str]) -> dict[str, Any]:
    """What a run row records: the report's counters, the number of failures, duration and failed spaces."""
    data = dataclasses.asdict(report)
    data["failures"] = len(report.failures)
    data["duration_s"] = round(duration_s, 3)
    data["failed_spaces"] = failed_spaces
    return data


def _counters(report: SyncReport, started: float, failed_spaces: dict[str, str]) -> dict[str, Any]:
    return run_counters(report, time.monotonic() - started, failed_spaces)
