"""Named queries over spaces, pages and chunks. The caller owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from db.models import AttachmentRecord, AttachmentVersion, PageRecord, PageVersion, StoredChunk

UPSERT_SPACE = """
INSERT INTO spaces (space_key, space_id, name, url) VALUES ($1, $2, $3, $4)
ON CONFLICT (space_key) DO UPDATE
   SET space_id = EXCLUDED.space_id, name = EXCLUDED.name, url = EXCLUDED.url
"""
MARK_SPACE_SYNCED = "UPDATE spaces SET last_synced_at = now() WHERE space_key = $1"

PAGES_AWAITING_EMBEDDINGS = """
SELECT count(*) FROM pages WHERE checksum = ''
"""

KNOWN_VERSIONS = """
SELECT page_id, version, checksum, status, comments_fingerprint, includes, content_type
  FROM pages WHERE space_key = $1
"""

UPSERT_PAGE = """
INSERT INTO pages (page_id, space_key, title, url, version, ancestors, labels, restricted, checksum,
                   last_modified, status, content_type, comments_fingerprint, comment_count, includes, synced_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, now())
ON CONFLICT (page_id) DO UPDATE
   SET space_key = EXCLUDED.space_key, title = EXCLUDED.title, url = EXCLUDED.url,
       version = EXCLUDED.version, ancestors = EXCLUDED.ancestors, labels = EXCLUDED.labels,
       restricted = EXCLUDED.restricted, checksum = EXCLUDED.checksum,
       last_modified = EXCLUDED.last_modified, status = EXCLUDED.status, content_type = EXCLUDED.content_type,
       comments_fingerprint = EXCLUDED.comments_fingerprint, comment_count = EXCLUDED.comment_count,
       includes = EXCLUDED.includes, synced_at = now()
"""
# A full sync and an answer-time refresh may write the same page at once: one waits for the other, or both
# would delete nothing new and collide on (page_id, chunk_index).
LOCK_PAGE = "SELECT pg_advisory_xact_lock(hashtext('askdocs-page:' || $1))"
# The page's own chunks (body and comments); its files' chunks are replaced file by file.
DELETE_PAGE_CHUNKS = "DELETE FROM chunks WHERE page_id = $1 AND attachment_id IS NULL"
# Title and headings weigh more than body text in keyword search.
INSERT_CHUNK = """
INSERT INTO chunks (page_id, space_key, chunk_index, heading_path, content, content_hash, token_count,
                    embedding, tsv, attachment_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
        setweight(to_tsvector('english', $9), 'A')
        || setweight(to_tsvector('english', array_to_string($4::text[], ' ')), 'B')
        || to_tsvector('english', $5), $10)
"""
# The same hash may sit in many pages; any copy's embedding will do (same model, same text).
EMBEDDINGS_BY_HASH = """
SELECT DISTINCT ON (content_hash) content_hash, embedding
  FROM chunks WHERE content_hash = ANY($1::text[])
"""
DELETE_PAGES = "DELETE FROM pages WHERE page_id = ANY($1::text[])"
PAGE_BY_ID = """
SELECT page_id, space_key, title, url, version, checksum, ancestors, labels, restricted, last_modified, status,
       content_type, comments_fingerprint, comment_count, includes
  FROM pages WHERE page_id = $1
"""
KNOWN_ATTACHMENTS = """
SELECT attachment_id, page_id, version, status FROM attachments WHERE space_key = $1
"""
UPSERT_ATTACHMENT = """
INSERT INTO attachments (attachment_id, page_id, space_key, title, media_type, file_size, version, url, status,
                         error, synced_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now())
ON CONFLICT (attachment_id) DO UPDATE
   SET page_id = EXCLUDED.page_id, space_key = EXCLUDED.space_key, title = EXCLUDED.title,
       media_type = EXCLUDED.media_type, file_size = EXCLUDED.file_size, version = EXCLUDED.version,
       url = EXCLUDED.url, status = EXCLUDED.status, error = EXCLUDED.error, synced_at = now()
"""
DELETE_ATTACHMENT_CHUNKS = "DELETE FROM chunks WHERE attachment_id = $1"
DELETE_ATTACHMENTS = "DELETE FROM attachments WHERE attachment_id = ANY($1::text[])"


async def upsert_space(
    conn: asyncpg.Connection, space_key: str, *, space_id: str | None, name: str | None, url: str | None
) -> None:
    await conn.execute(UPSERT_SPACE, space_key, space_id, name, url)


async def mark_space_synced(conn: asyncpg.Connection, space_key: str) -> None:
    await conn.execute(MARK_SPACE_SYNCED, space_key)


async def known_versions(conn: asyncpg.Connection, space_key: str) -> dict[str, PageVersion]:
    rows = await conn.fetch(KNOWN_VERSIONS, space_key)
    return {
        r["page_id"]: PageVersion(
            r["version"], r["checksum"], r["status"], r["comments_fingerprint"], tuple(r["includes"]),
            r["content_type"],
        )
        for r in rows
    }


async def embeddings_by_hash(conn: asyncpg.Connection, hashes: Sequence[str]) -> dict[str, Any]:
    if not hashes:
        return {}
    rows = await conn.fetch(EMBEDDINGS_BY_HASH, list(hashes))
    return {r["content_hash"]: r["embedding"] for r in rows}


async def lock_page(conn: asyncpg.Connection, page_id: str) -> None:
    """Serialise writers of one page until the caller's transaction ends."""
    await conn.execute(LOCK_PAGE, page_id)


async def upsert_page(conn: asyncpg.Connection, page: PageRecord) -> None:
    await conn.execute(
        UPSERT_PAGE, page.page_id, page.space_key, page.title, page.url, page.version,
        list(page.ancestors), list(page.labels), page.restricted, page.checksum, page.last_modified,
        page.status, page.content_type, page.comments_fingerprint, page.comment_count, list(page.includes),
    )


async def replace_chunks(
    conn: asyncpg.Connection, page: PageRecord, chunks: Sequence[StoredChunk]
) -> None:
    await conn.execute(DELETE_PAGE_CHUNKS, page.page_id)
    await conn.executemany(
        INSERT_CHUNK,
        [
            (page.page_id, page.space_key, c.chunk_index, list(c.heading_path), c.content,
             c.content_hash, c.token_count, c.embedding, page.title, None)
            for c in chunks
        ],
    )


async def delete_pages(conn: asyncpg.Connection, page_ids: Sequence[str]) -> int:
    if not page_ids:
        return 0
    result = await conn.execute(DELETE_PAGES, list(page_ids))
    return int(result.split()[-1])


async def page_by_id(conn: asyncpg.Connection, page_id: str) -> PageRecord | None:
    row = await conn.fetchrow(PAGE_BY_ID, page_id)
    if row is None:
        return None
    return PageRecord(
        page_id=row["page_id"], space_key=row["space_key"], title=row["title"], url=row["url"],
        version=row["version"], checksum=row["checksum"], ancestors=tuple(row["ancestors"]),
        labels=tuple(row["labels"]), restricted=row["restricted"], last_modified=row["last_modified"],
        status=row["status"], content_type=row["content_type"], comments_fingerprint=row["comments_fingerprint"],
        comment_count=row["comment_count"], includes=tuple(row["includes"]),
    )


async def known_attachments(conn: asyncpg.Connection, space_key: str) -> dict[str, AttachmentVersion]:
    rows = await conn.fetch(KNOWN_ATTACHMENTS, space_key)
    return {r["attachment_id"]: AttachmentVersion(r["page_id"], r["version"], r["status"]) for r in rows}


async def upsert_attachment(conn: asyncpg.Connection, record: AttachmentRecord) -> None:
    await conn.execute(
        UPSERT_ATTACHMENT, record.attachment_id, record.page_id, record.space_key, record.title,
        record.media_type, record.file_size, record.version, record.url, record.status, record.error,
    )


async def replace_attachment_chunks(
    conn: asyncpg.Connection, record: AttachmentRecord, page_title: str, chunks: Sequence[StoredChunk]
) -> None:
    """The file's chunks, weighted in keyword search by its name and its page's title."""
    await conn.execute(DELETE_ATTACHMENT_CHUNKS, record.attachment_id)
    await conn.executemany(
        INSERT_CHUNK,
        [
            (record.page_id, record.space_key, c.chunk_index, list(c.heading_path), c.content,
             c.content_hash, c.token_count, c.embedding, f"{record.title} {page_title}", record.attachment_id)
            for c in chunks
        ],
    )


async def delete_attachments(conn: asyncpg.Connection, attachment_ids: Sequence[str]) -> int:
    if not attachment_ids:
        return 0
    result = await conn.execute(DELETE_ATTACHMENTS, list(attachment_ids))
    return int(result.split()[-1])


async def pages_awaiting_embeddings(conn: asyncpg.Connection) -> int:
    """Pages whose embeddings were dropped for another embedding model (db.migrate.reset_embeddings)."""
    return int(await conn.fetchval(PAGES_AWAITING_EMBEDDINGS))
