"""Named query: recent questions Confluence didn't answer well (refused, 👎, or weak evidence).

Only what the knowledge-gap report needs leaves the database: the question text, when it was asked and why it
counts. Who asked (user_id, channel_id, thread_ts) is never selected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

# The standalone form of a thread follow-up ("what about on a Mac?") is what the wiki failed to answer.
# Rows that failed with an error are outages, not gaps. Newest first, so the row cap keeps the recent ones.
UNANSWERED_QUESTIONS = """
SELECT coalesce(nullif(btrim(q.standalone_question), ''), q.question) AS question,
       q.asked_at,
       q.refused,
       q.top_score,
       EXISTS (SELECT 1 FROM feedback f WHERE f.query_id = q.id AND f.value = -1) AS thumbs_down
  FROM query_log q
 WHERE q.asked_at >= now() - make_interval(days => $1)
   AND q.error IS NULL
   AND NOT (q.surface = ANY($2::text[]))
   AND (q.refused
        OR q.top_score < $3
        OR EXISTS (SELECT 1 FROM feedback f WHERE f.query_id = q.id AND f.value = -1))
 ORDER BY q.asked_at DESC, q.id DESC
 LIMIT $4
"""


@dataclass(frozen=True)
class UnansweredQuestion:
    question: str
    asked_at: datetime
    refused: bool
    top_score: float | None
    thumbs_down: bool


async def unanswered_questions(
    conn: asyncpg.Connection,
    *,
    days: int,
    weak_below: float,
    exclude_surfaces: Sequence[str],
    limit: int,
) -> list[UnansweredQuestion]:
    rows = await conn.fetch(UNANSWERED_QUESTIONS, days, list(exclude_surfaces), weak_below, limit)
    return [
        UnansweredQuestion(
            question=r["question"], asked_at=r["asked_at"], refused=r["refused"], top_score=r["top_score"],
            thumbs_down=r["thumbs_down"],
        )
        for r in rows
    ]
