"""Scheduled work done by exactly one replica: every replica's scheduler fires, the first claim wins.

Two `askdocs run` on one database each schedule the weekly knowledge-gaps digest; without a claim the ops
channel got it twice (issue 16).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg

from db import claims

logger = logging.getLogger(__name__)


def week_key(name: str, now: datetime) -> str:
    year, week, _ = now.astimezone(UTC).isocalendar()
    return f"{name} {year}-W{week:02d}"


async def once_per_week(
    pool: asyncpg.Pool, name: str, job: Callable[[], Awaitable[bool]], *, now: datetime | None = None
) -> bool:
    """Run `job` unless another replica (or an earlier run) already claimed this ISO week for `name`."""
    key = week_key(name, now or datetime.now(UTC))
    async with pool.acquire() as conn:
        if not await claims.claim_once(conn, key):
            logger.info("%s: already done by another replica", key)
            return False
    return await job()
