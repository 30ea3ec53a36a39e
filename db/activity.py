"""Named queries for the query log, feedback and knowledge-base status."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

LOG_QUERY = """
INSERT INTO query_log (surface, user_id, channel_id, thread_ts, question, standalone_question, answer,
                       refused, sources, top_score, latency_ms, error)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11, $12)
RETURNING id
"""
RECORD_FEEDBACK = """
INSERT INTO feedback (query_id, user_id, value) VALUES ($1, $2, $3)
ON CONFLICT (query_id, user_id) DO UPDATE SET value = EXCLUDED.value, created_at = now()
"""
SPACE_COUNTS = """
SELECT s.space_key, s.name, s.last_synced_at,
       (SELECT count(*) FROM pages p WHERE p.space_key = s.space_key AND p.status = 'current'
           AND p.content_type = 'page') AS pages,
       (SELECT count(*) FROM pages p WHERE p.space_key = s.space_key AND p.status = 'current'
           AND p.content_type = 'blogpost') AS blogposts,
       (SELECT coalesce(sum(p.comment_count), 0) FROM pages p
         WHERE p.space_key = s.space_key AND p.status = 'current') AS comments,
       (SELECT count(*) FROM attachments a WHERE a.space_key = s.space_key AND a.status = 'indexed')
           AS attachments,
       (SELECT count(*) FROM chunks c WHERE c.space_key = s.space_key) AS chunks
  FROM spaces s ORDER BY s.space_key
"""
EMBEDDING_CONFIG = "SELECT model, dimension FROM embedding_config"
QUERY_COUNT = "SELECT count(*) FROM query_log"


@dataclass(frozen=True)
class QueryLogEntry:
    surface: str
    question: str
    answer: str
    refused: bool
    sources: list[dict[str, Any]]
    standalone_question: str | None = None
    top_score: float | None = None
    latency_ms: int | None = None
    user_id: str | None = None
    channel_id: str | None = None
    thread_ts: str | None = None
    error: str | None = None


async def log_query(conn: asyncpg.Connection, entry: QueryLogEntry) -> int:
    return int(
        await conn.fetchval(
            LOG_QUERY, entry.surface, entry.user_id, entry.channel_id, entry.thread_ts, entry.question,
            entry.standalone_question, entry.answer, entry.refused, json.dumps(entry.sources),
            entry.top_score, entry.latency_ms, entry.error,
        )
    )


async def record_feedback(conn: asyncpg.Connection, *, query_id: int, user_id: str, value: int) -> None:
    await conn.execute(RECORD_FEEDBACK, query_id, user_id, value)


async def space_counts(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(SPACE_COUNTS)]


async def embedding_config(conn: asyncpg.Connection) -> dict[str, Any] | None:
    row = await conn.fetchrow(EMBEDDING_CONFIG)
    return dict(row) if row else None


async def query_count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(QUERY_COUNT))


# Feedback is deleted with its question (and by the foreign key's cascade anyway); counted for the log.
PRUNE_ACTIVITY = """
WITH old AS (SELECT id FROM query_log WHERE asked_at < $1),
     gone_feedback AS (DELETE FROM feedback WHERE query_id IN (SELECT id FROM old) RETURNING 1),
     gone_queries AS (DELETE FROM query_log WHERE id IN (SELECT id FROM old) RETURNING 1)
SELECT (SELECT count(*) FROM gone_queries) AS queries, (SELECT count(*) FROM gone_feedback) AS feedback
"""


async def prune_activity(conn: asyncpg.Connection, *, before: datetime) -> tuple[int, int]:
    """Delete questions asked before `before` and their feedback; returns (questions, feedback) deleted."""
    row = await conn.fetchrow(PRUNE_ACTIVITY, before)
    assert row is not None
    return int(row["queries"]), int(row["feedback"])
