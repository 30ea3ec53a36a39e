"""Query-log retention: questions, answers and feedback older than QUERY_LOG_RETENTION_DAYS are deleted.

The log holds what people asked (and who): keeping it forever is neither needed for the knowledge-gaps digest
(a week) nor kind to privacy (issue 16). Runs daily from the scheduler.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import asyncpg

from db import activity

logger = logging.getLogger(__name__)


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
