"""Named queries for sync runs and per-page failures, and the cross-process sync lock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from db.models import SyncRun

# One advisory lock key for "a sync is running", shared by every process and replica on the database.
SYNC_LOCK_KEY = 0x61736B73796E63  # "asksync"

TRY_LOCK = "SELECT pg_try_advisory_lock($1)"
UNLOCK = "SELECT pg_advisory_unlock($1)"
START_RUN = """
INSERT INTO sync_runs (trigger, requested_by, spaces, force) VALUES ($1, $2, $3, $4)
RETURNING id
"""
UPDATE_COUNTERS = "UPDATE sync_runs SET counters = $2::jsonb WHERE id = $1"
FINISH_RUN = """
UPDATE sync_runs SET status = $2, finished_at = now(), counters = $3::jsonb, error = $4 WHERE id = $1
"""
# A run left 'running' by a process that died can't be running if we hold the lock.
CLOSE_ORPHANED_RUNS = """
UPDATE sync_runs SET status = 'failed', finished_at = now(), error = 'interrupted: the process stopped'
 WHERE status = 'running'
"""
RECORD_FAILURE = """
INSERT INTO sync_failures (run_id, page_id, space_key, title, url, error) VALUES ($1, $2, $3, $4, $5, $6)
"""
RUN_COLUMNS = "id, trigger, requested_by, spaces, force, status, started_at, finished_at, counters, error"
RUN_BY_ID = f"SELECT {RUN_COLUMNS} FROM sync_runs WHERE id = $1"
RUNNING_RUN = f"SELECT {RUN_COLUMNS} FROM sync_runs WHERE status = 'running' ORDER BY started_at DESC LIMIT 1"
LAST_RUN = f"SELECT {RUN_COLUMNS} FROM sync_runs WHERE status <> 'running' ORDER BY started_at DESC LIMIT 1"
LAST_SUCCESSFUL_RUN = f"""
SELECT {RUN_COLUMNS} FROM sync_runs WHERE status = 'succeeded' ORDER BY started_at DESC LIMIT 1
"""
RUN_FAILURES = """
SELECT page_id, space_key, title, url, error FROM sync_failures WHERE run_id = $1 ORDER BY id LIMIT $2
"""


def _run(row: asyncpg.Record) -> SyncRun:
    counters = row["counters"]
    return SyncRun(
        id=row["id"], trigger=row["trigger"], requested_by=row["requested_by"], spaces=tuple(row["spaces"]),
        force=row["force"], status=row["status"], started_at=row["started_at"],
        finished_at=row["finished_at"], counters=json.loads(counters) if isinstance(counters, str) else counters,
        error=row["error"],
    )


@asynccontextmanager
async def sync_lock(pool: asyncpg.Pool) -> AsyncIterator[bool]:
    """Hold the sync lock for the body if it is free; yields False (and holds nothing) if it isn't.

    The lock lives on one dedicated connection: if the process dies, Postgres releases it.
    """
    conn = await pool.acquire()
    try:
        acquired = bool(await conn.fetchval(TRY_LOCK, SYNC_LOCK_KEY))
        if not acquired:
            yield False
            return
        try:
            await conn.execute(CLOSE_ORPHANED_RUNS)
            yield True
        finally:
            try:
                await conn.fetchval(UNLOCK, SYNC_LOCK_KEY)
            except (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, OSError):
                # The connection died (database restarted): the server released the lock with it, and asyncpg
                # may already have detached it from the pool, so even is_closed() would raise here.
                pass
    finally:
        await pool.release(conn)


async def start_run(
    conn: asyncpg.Connection, *, trigger: str, requested_by: str | None, spaces: Sequence[str], force: bool
) -> int:
    return int(await conn.fetchval(START_RUN, trigger, requested_by, list(spaces), force))


async def update_counters(conn: asyncpg.Connection, run_id: int, counters: dict[str, Any]) -> None:
    await conn.execute(UPDATE_COUNTERS, run_id, json.dumps(counters))


async def finish_run(
    conn: asyncpg.Connection, run_id: int, *, status: str, counters: dict[str, Any], error: str | None
) -> None:
    await conn.execute(FINISH_RUN, run_id, status, json.dumps(counters), error)


async def record_failure(
    conn: asyncpg.Connection, run_id: int, *, page_id: str, space_key: str | None, title: str | None,
    url: str | None, error: str,
) -> None:
    await conn.execute(RECORD_FAILURE, run_id, page_id, space_key, title, url, error)


async def run_by_id(conn: asyncpg.Connection, run_id: int) -> SyncRun | None:
    row = await conn.fetchrow(RUN_BY_ID, run_id)
    return _run(row) if row else None


async def running_run(conn: asyncpg.Connection) -> SyncRun | None:
    row = await conn.fetchrow(RUNNING_RUN)
    return _run(row) if row else None


async def last_run(conn: asyncpg.Connection) -> SyncRun | None:
    row = await conn.fetchrow(LAST_RUN)
    return _run(row) if row else None


async def last_successful_run(conn: asyncpg.Connection) -> SyncRun | None:
    row = await conn.fetchrow(LAST_SUCCESSFUL_RUN)
    return _run(row) if row else None


async def run_failures(conn: asyncpg.Connection, run_id: int, *, limit: int = 100) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(RUN_FAILURES, run_id, limit)]
