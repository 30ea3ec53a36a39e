"""The seed design's sync, as the yardstick for ours: list every page WITH its body, compare MD5s, re-embed.

Each run lists the whole space through the v1 content listing with `expand=body.storage` (Confluence caps
such pages at 50 results or fewer), takes the MD5 of each raw storage body, and for every page whose MD5
differs from the stored one re-chunks the page and re-embeds EVERY chunk. Its state lives in two tables of
its own (`seed_pages`, `seed_chunks`) so its database work is comparable to ours. Chunking uses the same
converter, chunker, tokenizer and budget as ours, so tokens compare like for like.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg

from ingest.chunker import chunk_sections
from ingest.embedders import Embedder
from ingest.models import Chunk, Section
from ingest.storage_format import to_sections
from ingest.sync import SyncOptions
from ingest.tokens import CharacterBoundTokenizer

LIST_EXPAND = "body.storage,version,ancestors"

CREATE_SEED_TABLES = """
CREATE TABLE IF NOT EXISTS seed_pages (page_id text PRIMARY KEY, md5 text NOT NULL);
CREATE TABLE IF NOT EXISTS seed_chunks (
    page_id text NOT NULL, chunk_index integer NOT NULL, content text NOT NULL, token_count integer NOT NULL,
    embedding vector NOT NULL, PRIMARY KEY (page_id, chunk_index)
);
"""
SEED_MD5S = "SELECT page_id, md5 FROM seed_pages"
UPSERT_SEED_PAGE = """
INSERT INTO seed_pages (page_id, md5) VALUES ($1, $2) ON CONFLICT (page_id) DO UPDATE SET md5 = EXCLUDED.md5
"""
DELETE_SEED_CHUNKS = "DELETE FROM seed_chunks WHERE page_id = $1"
INSERT_SEED_CHUNK = """
INSERT INTO seed_chunks (page_id, chunk_index, content, token_count, embedding) VALUES ($1, $2, $3, $4, $5)
"""
DELETE_SEED_PAGES = "DELETE FROM seed_pages WHERE page_id = ANY($1::text[])"
DELETE_SEED_PAGE_CHUNKS = "DELETE FROM seed_chunks WHERE page_id = ANY($1::text[])"


def chunk_like_sync(
    sections: list[Section], *, title: str, breadcrumb: str, embedder: Embedder, options: SyncOptions = SyncOptions()
) -> list[Chunk]:
    """Chunks exactly as ingest.sync.index_page makes them (same tokenizer wrapper, budget and overlap)."""
    return chunk_sections(
        sections,
        title=title,
        breadcrumb=breadcrumb,
        tokenizer=CharacterBoundTokenizer(embedder.tokenizer),
        max_tokens=min(embedder.max_input_tokens, options.max_chunk_tokens),
        overlap_tokens=options.overlap_tokens,
    )


@dataclass
class SeedReport:
    pages_listed: int = 0
    bodies_listed: int = 0
    pages_changed: int = 0
    chunks_embedded: int = 0
    embedding_tokens: int = 0


@dataclass(frozen=True)
class ListedPage:
    page_id: str
    title: str
    breadcrumb: str
    body: str


class SeedSync:
    """One space, synced the seed way (Confluence Cloud paths, basic auth)."""

    def __init__(
        self,
        *,
        base_url: str,
        email: str,
        api_token: str,
        space_key: str,
        pool: asyncpg.Pool,
        embedder: Embedder,
        options: SyncOptions = SyncOptions(),
        page_limit: int = 100,
    ) -> None:
        self._site = base_url.rstrip("/") + "/wiki"
        self._auth = "Basic " + base64.b64encode(f"{email}:{api_token}".encode()).decode("ascii")
        self._space_key = space_key
        self._pool = pool
        self._embedder = embedder
        self._options = options
        self._semaphore = asyncio.Semaphore(options.concurrency)
        self._page_limit = page_limit

    async def create_tables(self) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(CREATE_SEED_TABLES)

    async def run(self) -> SeedReport:
        report = SeedReport()
        async with self._pool.acquire() as conn:
            stored = {r["page_id"]: r["md5"] for r in await conn.fetch(SEED_MD5S)}
        listed: set[str] = set()
        tasks = []
        async with aiohttp.ClientSession(headers={"Authorization": self._auth}) as session:
            async for page in self._list_with_bodies(session):
                report.pages_listed += 1
                report.bodies_listed += 1
                listed.add(page.page_id)
                md5 = hashlib.md5(page.body.encode("utf-8")).hexdigest()
                if stored.get(page.page_id) != md5:
                    report.pages_changed += 1
                    tasks.append(asyncio.create_task(self._reindex(page, md5, report)))
            await asyncio.gather(*tasks)
        gone = sorted(set(stored) - listed)
        if gone:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(DELETE_SEED_PAGE_CHUNKS, gone)
                await conn.execute(DELETE_SEED_PAGES, gone)
        return report

    async def _list_with_bodies(self, session: aiohttp.ClientSession) -> AsyncIterator[ListedPage]:
        """Every current page with its body, following `_links.next` verbatim."""
        query = {
            "spaceKey": self._space_key,
            "type": "page",
            "status": "current",
            "expand": LIST_EXPAND,
            "limit": self._page_limit,
        }
        url: str | None = f"{self._site}/rest/api/content?{urlencode(query)}"
        while url is not None:
            async with session.get(url) as response:
                response.raise_for_status()
                data: dict[str, Any] = await response.json()
            for item in data.get("results", []):
                ancestors = [str(a.get("title", "")) for a in item.get("ancestors", [])]
                title = str(item.get("title", ""))
                yield ListedPage(
                    page_id=str(item["id"]),
                    title=title,
                    breadcrumb=" > ".join((*ancestors, title)),
                    body=str(item.get("body", {}).get("storage", {}).get("value", "")),
                )
            nxt = data.get("_links", {}).get("next")
            url = f"{self._site}{nxt}" if nxt else None

    async def _reindex(self, page: ListedPage, md5: str, report: SeedReport) -> None:
        """Re-chunk the page and re-embed every chunk, then replace its rows."""
        async with self._semaphore:
            chunks = chunk_like_sync(
                to_sections(page.body, title=page.title),
                title=page.title,
                breadcrumb=page.breadcrumb,
                embedder=self._embedder,
                options=self._options,
            )
            vectors = await self._embedder.embed([c.embed_text for c in chunks]) if chunks else []
            report.chunks_embedded += len(chunks)
            report.embedding_tokens += sum(c.token_count for c in chunks)
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(DELETE_SEED_CHUNKS, page.page_id)
                await conn.executemany(
                    INSERT_SEED_CHUNK,
                    [
                        (page.page_id, c.index, c.content, c.token_count, v)
                        for c, v in zip(chunks, vectors, strict=True)
                    ],
                )
                await conn.execute(UPSERT_SEED_PAGE, page.page_id, md5)
