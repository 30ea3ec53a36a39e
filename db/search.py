"""Hybrid retrieval: pgvector HNSW (cosine) and Postgres full text, candidates for rank fusion.

Both legs run in one round trip. The vector leg uses pgvector 0.8 iterative index scans so a space filter
doesn't starve it of rows (a plain HNSW scan filters after the index and can return fewer than LIMIT).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from db.models import Audience, SearchHit

# ef_search (pgvector's default is 40): recall@10 at 100k chunks was 0.901 / 0.949 / 0.974 at 40 / 100 / 200,
# with a top-10 p95 of 2.5 / 3.5 / 5.1 ms (bench/search.py). 200 meets recall ≥ 0.95 for ~2 ms.
EF_SEARCH = 200

SET_SEARCH_PARAMETERS = """
SELECT set_config('hnsw.ef_search', $1, true), set_config('hnsw.iterative_scan', 'relaxed_order', true)
"""

HYBRID_CANDIDATES = """
WITH audience AS MATERIALIZED (
    -- Issue 15 ($7 true: CONFLUENCE_PERMISSIONS=per-user): the asker's principals, or ($8 NULL) everyone's.
    SELECT ARRAY['user:' || $8::text] || coalesce(array_agg('group:' || m.group_id), '{}') AS principals
      FROM (SELECT 1) AS one LEFT JOIN group_members m ON m.account_id = $8::text
), readable AS MATERIALIZED (
    -- Pages the audience may read: permissions read (fail closed), and either org-wide for everyone, or the
    -- space readable by one of the asker's principals and each restriction (page, ancestors) naming one too.
    SELECT a.page_id
      FROM page_access a JOIN pages p USING (page_id) JOIN space_access s USING (space_key), audience
     WHERE $7::boolean AND a.readable
       AND CASE WHEN $8::text IS NULL THEN a.org_wide
                ELSE s.principals && audience.principals
                     AND NOT EXISTS (SELECT 1 FROM page_restrictions r
                                      WHERE r.page_id = a.page_id AND NOT r.principals && audience.principals)
           END
), vector_leg AS MATERIALIZED (
    SELECT id, embedding <=> $1 AS distance
      FROM chunks
     WHERE ($2::text[] IS NULL OR space_key = ANY($2::text[]))
       AND (NOT $7::boolean OR page_id IN (SELECT page_id FROM readable))
     ORDER BY embedding <=> $1
     LIMIT $3
), vector_ranked AS (
    SELECT id, row_number() OVER (ORDER BY distance) AS vector_rank FROM vector_leg
), keyword_terms AS MATERIALIZED (
    -- The question's distinctive lexemes only (see migration 002), OR-ed into one tsquery.
    SELECT string_agg(quote_literal(term.lexeme), ' | ')::tsquery AS query
      FROM unnest(tsvector_to_array(to_tsvector('english', $4))) AS term(lexeme)
      JOIN lexeme_stats stats ON stats.lexeme = term.lexeme
     WHERE stats.ndoc <= greatest($5::integer, $6::double precision * (SELECT chunks FROM search_stats))
       AND strpos(term.lexeme, chr(92)) = 0
), keyword_leg AS MATERIALIZED (
    SELECT id, row_number() OVER (ORDER BY ts_rank_cd(tsv, query) DESC, id) AS keyword_rank
      FROM chunks, keyword_terms
     WHERE query IS NOT NULL AND tsv @@ query AND ($2::text[] IS NULL OR space_key = ANY($2::text[]))
       AND (NOT $7::boolean OR page_id IN (SELECT page_id FROM readable))
     ORDER BY ts_rank_cd(tsv, query) DESC, id
     LIMIT $3
), candidates AS (
    SELECT id FROM vector_ranked UNION SELECT id FROM keyword_leg
)
SELECT c.id, c.page_id, c.space_key, c.heading_path, c.content,
       1 - (c.embedding <=> $1) AS similarity,
       v.vector_rank, k.keyword_rank,
       p.title, p.url, p.ancestors, p.last_modified, p.version,
       c.attachment_id, a.title AS attachment_title, a.url AS attachment_url
  FROM candidates
  JOIN chunks c USING (id)
  JOIN pages p ON p.page_id = c.page_id
  LEFT JOIN attachments a ON a.attachment_id = c.attachment_id
  LEFT JOIN vector_ranked v USING (id)
  LEFT JOIN keyword_leg k USING (id)
"""

SUBJECT_CHUNK_COUNTS = """
-- How many chunks mention each term: an identifier ($2 true) as a phrase, counted up to $3; any other term by
-- its rarest lexeme (lexeme_stats, refreshed after each sync). A term with no lexeme (a stopword) is common.
SELECT term,
       CASE WHEN exact
            THEN (SELECT count(*) FROM (SELECT 1 FROM chunks
                                         WHERE tsv @@ phraseto_tsquery('english', term) LIMIT $3) AS found)
            ELSE (SELECT coalesce(min(coalesce(stats.ndoc, 0)), 2147483647)
                    FROM unnest(tsvector_to_array(to_tsvector('english', term))) AS word(lexeme)
                    LEFT JOIN lexeme_stats stats ON stats.lexeme = word.lexeme)
       END AS chunks
  FROM unnest($1::text[], $2::boolean[]) AS subject(term, exact)
"""

# A keyword counts as distinctive in at most this many chunks, or this share of them if that is more.
DISTINCTIVE_MIN_CHUNKS = 200
DISTINCTIVE_MAX_SHARE = 0.03

REFRESH_LEXEME_STATS = [
    "DELETE FROM lexeme_stats",
    "INSERT INTO lexeme_stats (lexeme, ndoc) SELECT word, ndoc FROM ts_stat('SELECT tsv FROM chunks')",
    "DELETE FROM search_stats",
    "INSERT INTO search_stats (chunks) SELECT count(*) FROM chunks",
]

EXACT_NEAREST = """
SELECT id FROM chunks WHERE $2::text[] IS NULL OR space_key = ANY($2::text[])
 ORDER BY embedding <=> $1 LIMIT $3
"""


async def hybrid_candidates(
    conn: asyncpg.Connection,
    embedding: Any,
    keyword_query: str,
    *,
    spaces: Sequence[str] | None = None,
    limit: int = 40,
    ef_search: int = EF_SEARCH,
    audience: Audience | None = None,
) -> list[SearchHit]:
    """Up to `limit` chunks from each leg, scored by their cosine similarity (ranking fuses the legs later).

    `keyword_query` holds the question's words ('' skips the leg); only its distinctive lexemes reach it.
    `audience` (CONFLUENCE_PERMISSIONS=per-user) keeps both legs to pages it may read, before any ranking;
    None searches every indexed page (public mode)."""
    async with conn.transaction():
        await conn.execute(SET_SEARCH_PARAMETERS, str(max(ef_search, limit)))
        rows = await conn.fetch(
            HYBRID_CANDIDATES, embedding, list(spaces) if spaces else None, limit, keyword_query,
            DISTINCTIVE_MIN_CHUNKS, DISTINCTIVE_MAX_SHARE, audience is not None,
            audience.account_id if audience is not None else None,
        )
    return [
        SearchHit(
            chunk_id=r["id"], page_id=r["page_id"], space_key=r["space_key"], title=r["title"], url=r["url"],
            breadcrumb=tuple(r["ancestors"]), heading_path=tuple(r["heading_path"]), content=r["content"],
            score=float(r["similarity"]), vector_similarity=float(r["similarity"]), vector_rank=r["vector_rank"],
            keyword_rank=r["keyword_rank"], last_modified=r["last_modified"], version=r["version"],
            attachment_id=r["attachment_id"], attachment_title=r["attachment_title"],
            attachment_url=r["attachment_url"],
        )
        for r in rows
    ]


async def subject_chunk_counts(
    conn: asyncpg.Connection, terms: Sequence[tuple[str, bool]], *, cap: int = 10
) -> dict[str, int]:
    """For each (term, exact) pair, how many chunks mention it (identifiers counted up to `cap`)."""
    if not terms:
        return {}
    rows = await conn.fetch(SUBJECT_CHUNK_COUNTS, [t for t, _ in terms], [e for _, e in terms], cap)
    return {r["term"]: int(r["chunks"]) for r in rows}


async def refresh_lexeme_stats(conn: asyncpg.Connection) -> None:
    """Recount lexemes after a sync changed chunks (a few seconds at 100k chunks; once per sync)."""
    async with conn.transaction():
        for statement in REFRESH_LEXEME_STATS:
            await conn.execute(statement)


async def exact_nearest(
    conn: asyncpg.Connection, embedding: Any, *, spaces: Sequence[str] | None = None, limit: int = 10
) -> list[int]:
    """Exact (sequential) nearest neighbours: the ground truth for recall measurements."""
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_indexscan = off")
        rows = await conn.fetch(EXACT_NEAREST, embedding, list(spaces) if spaces else None, limit)
    return [r["id"] for r in rows]


async def explain_vector_leg(conn: asyncpg.Connection, embedding: Any, *, limit: int = 40) -> str:
    """The plan of the vector leg, so a test can prove the HNSW index is used."""
    async with conn.transaction():
        await conn.execute(SET_SEARCH_PARAMETERS, str(EF_SEARCH))
        rows = await conn.fetch(
            "EXPLAIN SELECT id FROM chunks ORDER BY embedding <=> $1 LIMIT $2", embedding, limit
        )
    return "\n".join(r[0] for r in rows)
