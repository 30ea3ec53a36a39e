"""SyncStore: everything the sync engine may do to the knowledge base, one transaction per call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from db import access, pages, search
from db.models import AttachmentRecord, AttachmentVersion, PageRecord, PageVersion, StoredChunk


class SyncStore:
    """The sync engine's only door to the database."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def upsert_space(
        self, space_key: str, *, space_id: str | None = None, name: str | None = None, url: str | None = None
    ) -> None:
        async with self._pool.acquire() as conn:
            await pages.upsert_space(conn, space_key, space_id=space_id, name=name, url=url)

    async def mark_space_synced(self, space_key: str) -> None:
        async with self._pool.acquire() as conn:
            await pages.mark_space_synced(conn, space_key)

    async def known_versions(self, space_key: str) -> dict[str, PageVersion]:
        async with self._pool.acquire() as conn:
            return await pages.known_versions(conn, space_key)

    async def embeddings_for(self, hashes: Sequence[str]) -> dict[str, Any]:
        async with self._pool.acquire() as conn:
            return await pages.embeddings_by_hash(conn, hashes)

    async def save_page(self, page: PageRecord, chunks: Sequence[StoredChunk]) -> None:
        """Write the page row, its checksum and all its chunks together, or nothing at all."""
        async with self._pool.acquire() as conn, conn.transaction():
            await pages.lock_page(conn, page.page_id)
            await pages.upsert_page(conn, page)
            await pages.replace_chunks(conn, page, chunks)

    async def save_page_metadata(self, page: PageRecord) -> None:
        """A new version whose visible text is unchanged: refresh the row, keep the chunks."""
        async with self._pool.acquire() as conn:
            await pages.upsert_page(conn, page)

    async def delete_pages(self, page_ids: Sequence[str]) -> int:
        async with self._pool.acquire() as conn:
            return await pages.delete_pages(conn, page_ids)

    async def refresh_search_stats(self) -> None:
        async with self._pool.acquire() as conn:
            await search.refresh_lexeme_stats(conn)

    async def page(self, page_id: str) -> PageRecord | None:
        async with self._pool.acquire() as conn:
            return await pages.page_by_id(conn, page_id)

    async def known_attachments(self, space_key: str) -> dict[str, AttachmentVersion]:
        async with self._pool.acquire() as conn:
            return await pages.known_attachments(conn, space_key)

    async def save_attachment(
        self, record: AttachmentRecord, chunks: Sequence[StoredChunk], *, page_title: str
    ) -> None:
        """Write the file's row and all its chunks together, or nothing at all."""
        async with self._pool.acquire() as conn, conn.transaction():
            await pages.lock_page(conn, record.page_id)
            await pages.upsert_attachment(conn, record)
            await pages.replace_attachment_chunks(conn, record, page_title, chunks)

    async def delete_attachments(self, attachment_ids: Sequence[str]) -> int:
        async with self._pool.acquire() as conn:
            return await pages.delete_attachments(conn, attachment_ids)


class AccessStore:
    """The permission refresh's door to the database (ingest.permissions.PermissionStore)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def indexed_pages(self, space_key: str) -> list[str]:
        async with self._pool.acquire() as conn:
            return await access.indexed_pages(conn, space_key)

    async def save_space_access(
        self, space_key: str, principals: frozenset[str], *, org_wide: bool, pages: Sequence[Any],
    ) -> None:
        """One transaction per space: answers see the old access or the new, never a mix."""
        rows = [(p.page_id, p.readable, p.org_wide, p.error, p.restrictions) for p in pages]
        async with self._pool.acquire() as conn, conn.transaction():
            await access.save_space_access(conn, space_key, principals, org_wide=org_wide, pages=rows)

    async def save_directory(
        self, groups: dict[str, str], members: dict[str, list[str]], emails: dict[str, str | None],
    ) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await access.save_directory(conn, groups, members, emails)
