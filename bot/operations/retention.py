"""Query-log retention: questions, answers and feedback older than QUERY_LOG_RETENTION_DAYS are deleted.

The log holds what people asked (and who): keeping it forever is neither needed for the knowledge-gaps digest
(a week) nor kind to privacy (issue 16). Runs daily from the scheduler.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import asyncpg

from db import activity, claims

logger = logging.getLogger(__name__)

CLAIMS_KEEP_DAYS = 14


async def prune_query_log(
    pool: asyncpg.Pool, *, retention_days: int, now: datetime | None = None
) -> tuple[int, int]:
    """Delete questions (and their feedback) older than `retention_days`; 0 keeps everything."""
    if retention_days <= 0:
        return 0, 0
    before = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    async with pool.acquire() as conn:
        questions, feedback = await activity.prune_activity(conn, before=before)
    if questions:
        logger.info("query log retention (%d days): deleted %d questions and %d feedback votes",
                    retention_days, questions, feedback)
    return questions, feedback


async def prune_claims(pool: asyncpg.Pool, *, keep_days: int = CLAIMS_KEEP_DAYS, now: datetime | None = None) -> int:
    """Forget replica claims (one per Slack message answered, one per weekly digest) older than `keep_days`:
    a redelivery comes within minutes and a week's digest is claimed within that week."""
    before = (now or datetime.now(UTC)) - timedelta(days=keep_days)
    async with pool.acquire() as conn:
        return await claims.prune_claims(conn, before=before)
