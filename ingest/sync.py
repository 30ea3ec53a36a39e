"""sync_space(): list → diff → fetch what changed → convert → chunk → reuse or embed → save → prune.

Change detection costs one cheap listing (ids + version numbers, no bodies). Bodies are fetched only for new
pages and new versions; a new version whose visible text is unchanged (same checksum) re-embeds nothing; within
a changed page, chunks whose text is unchanged reuse their stored embedding.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from db.models import AttachmentRecord, AttachmentVersion, PageRecord, PageVersion, StoredChunk
from ingest.attachments import AttachmentOptions, HostPage, sync_attachments
from ingest.chunker import chunk_sections
from ingest.comments import PageText, page_text
from ingest.convert import Converter
from ingest.embedders import Embedder
from ingest.errors import ConfluenceError, ListingIncomplete, PageForbidden, one_line
from ingest.models import AttachmentRef, Chunk, Comment, IncludedPage, Page, PageFailure, PageRef, Space, SyncReport
from ingest.storage_format import content_checksum
from ingest.tokens import CharacterBoundTokenizer

logger = logging.getLogger(__name__)


class PageSource(Protocol):
    """What sync needs from Confluence (ConfluenceClient satisfies it)."""

    async def get_space(self, key: str) -> Space: ...
    async def list_pages(self, space_key: str) -> list[PageRef]: ...
    async def fetch_page(self, page_id: str, *, content_type: str | None = None) -> Page: ...
    async def current_versions(self, page_ids: list[str]) -> dict[str, int | None]: ...
    # Beyond page bodies (issue 14): ingest/confluence_content.py
    async def list_blogposts(self, space_key: str) -> list[PageRef]: ...
    async def comment_fingerprints(self) -> dict[str, str] | None: ...
    async def fetch_comments(self, page_id: str, *, content_type: str = "page") -> list[Comment]: ...
    async def display_names(self, users: set[tuple[str, str]]) -> dict[str, str]: ...
    async def fetch_included(self, space_key: str, title: str) -> IncludedPage | None: ...
    async def list_attachments(self) -> dict[str, list[AttachmentRef]] | None: ...
    async def download_attachment(self, ref: AttachmentRef, *, max_bytes: int) -> bytes: ...


SourceFactory = Callable[[], AbstractAsyncContextManager[PageSource]]
"""A fresh Confluence client per use: its HTTP session lives as long as the context."""


class PageStore(Protocol):
    """What sync needs from the database (db.store.SyncStore satisfies it)."""

    async def upsert_space(
        self, space_key: str, *, space_id: str | None = None, name: str | None = None, url: str | None = None
    ) -> None: ...
    async def mark_space_synced(self, space_key: str) -> None: ...
    async def known_versions(self, space_key: str) -> dict[str, PageVersion]: ...
    async def embeddings_for(self, hashes: Sequence[str]) -> dict[str, Any]: ...
    async def save_page(self, page: PageRecord, chunks: Sequence[StoredChunk]) -> None: ...
    async def save_page_metadata(self, page: PageRecord) -> None: ...
    async def delete_pages(self, page_ids: Sequence[str]) -> int: ...
    async def known_attachments(self, space_key: str) -> dict[str, AttachmentVersion]: ...
    async def save_attachment(
        self, record: AttachmentRecord, chunks: Sequence[StoredChunk], *, page_title: str
    ) -> None: ...
    async def delete_attachments(self, attachment_ids: Sequence[str]) -> int: ...


@dataclass(frozen=True)
class SyncOptions:
    force: bool = False
    include_restricted: bool = False
    max_delete_fraction: float = 0.5
    overlap_tokens: int = 32
    concurrency: int = 4
    # Chunks are a citation's unit: a model that accepts 8,191 tokens would otherwise get whole pages, and
    # one fact in the middle of a long page would drown. MiniLM's own limit (254) is lower still.
    max_chunk_tokens: int = 512
    # Issue 14: content beyond page bodies (CONFLUENCE_INCLUDE_ATTACHMENTS / _COMMENTS / _BLOGPOSTS).
    include_attachments: bool = True
    include_comments: bool = True
    include_blogposts: bool = True
    attachments: AttachmentOptions = AttachmentOptions()


@dataclass(frozen=True)
class Progress:
    space_key: str
    done: int
    total: int


ProgressCallback = Callable[[Progress], Awaitable[None]]
FailureCallback = Callable[[str, PageFailure], Awaitable[None]]


def page_checksum(page: Page, text_checksum: str) -> str:
    """Checksum of what a reader sees: title, breadcrumb and normalised text (not markup, not version)."""
    return hashlib.sha256(f"{page.title}\n{page.breadcrumb}\n{text_checksum}".encode()).hexdigest()


def page_record(page: Page, checksum: str, *, status: str = "current", text: PageText | None = None) -> PageRecord:
    return PageRecord(
        page_id=page.page_id, space_key=page.space_key, title=page.title, url=page.url,
        version=page.version, checksum=checksum, ancestors=page.ancestors, labels=page.labels,
        restricted=page.restricted, last_modified=page.last_modified, status=status,
        content_type=page.content_type,
        comments_fingerprint=text.comments_fingerprint if text else "",
        comment_count=text.comment_count if text else 0,
        includes=text.includes if text else (),
    )


def pages_to_fetch(
    refs: Sequence[PageRef], known: dict[str, PageVersion], *, force: bool, include_restricted: bool = False,
    comments: dict[str, str] | None = None,
) -> list[PageRef]:
    """New pages, new versions, pages whose last save was cleared (checksum ''), pages skipped as
    restricted once restricted pages are wanted, pages whose comments changed (`comments`: fingerprint by
    page, None when unknown) and pages that include a page being fetched."""
    if force:
        return list(refs)
    todo = [
        ref for ref in refs
        if ref.page_id not in known
        or known[ref.page_id].version != ref.version
        or not known[ref.page_id].checksum
        or (include_restricted and known[ref.page_id].status == "restricted")
        or (comments is not None and known[ref.page_id].status == "current"
            and comments.get(ref.page_id, "") != known[ref.page_id].comments_fingerprint)
    ]
    changed = {ref.page_id for ref in todo}
    return todo + [
        ref for ref in refs
        if ref.page_id not in changed and ref.page_id in known and changed & set(known[ref.page_id].includes)
    ]


def deletion_allowed(missing: int, known: int, *, max_fraction: float, force: bool) -> bool:
    """The mass-deletion guard: a listing that suddenly lacks most of a space is more likely wrong than true."""
    return force or known == 0 or missing <= max_fraction * known


async def embed_chunks(
    chunks: Sequence[Chunk], *, store: PageStore, embedder: Embedder, reuse: bool, report: SyncReport
) -> list[StoredChunk]:
    """Embeddings for a page's chunks: stored ones for unchanged text, fresh ones for the rest."""
    stored = await store.embeddings_for([c.content_hash for c in chunks]) if reuse else {}
    missing = [c for c in chunks if c.content_hash not in stored]
    if missing:
        vectors = await embedder.embed([c.embed_text for c in missing])
        stored = {**stored, **{c.content_hash: v for c, v in zip(missing, vectors, strict=True)}}
        report.chunks_embedded += len(missing)
        report.embedding_tokens += sum(c.token_count for c in missing)
    report.chunks_reused += len(chunks) - len(missing)
    return [
        StoredChunk(
            chunk_index=c.index, heading_path=c.heading_path, content=c.content,
            content_hash=c.content_hash, token_count=c.token_count, embedding=stored[c.content_hash],
        )
        for c in chunks
    ]


async def index_page(
    page: Page, *, known: PageVersion | None, store: PageStore, embedder: Embedder, options: SyncOptions,
    report: SyncReport, source: PageSource | None = None, fetch_comments: bool = True,
    converter: Converter | None = None,
) -> str:
    """Convert, chunk, embed and save one fetched page; returns what happened (added/updated/unchanged).

    With a `source`, mentions are named, includes inlined and comments added (ingest/comments.py). Parsing
    (in `converter`'s worker process for big pages) and chunking run off the event loop: a 2 MB page takes
    seconds of CPU, which on the loop stalled Slack acks and /healthz (issue 16)."""
    text = await page_text(page, source=source, include_comments=options.include_comments and fetch_comments,
                           converter=converter)
    sections = text.sections
    report.comments_indexed += text.comment_count
    checksum = page_checksum(page, await asyncio.to_thread(content_checksum, sections))
    record = page_record(page, checksum, text=text)
    if known is not None and known.checksum == checksum and not options.force:
        await store.save_page_metadata(record)
        return "unchanged"
    chunks = await asyncio.to_thread(
        chunk_sections, sections, title=page.title, breadcrumb=page.breadcrumb,
        tokenizer=CharacterBoundTokenizer(embedder.tokenizer),
        max_tokens=min(embedder.max_input_tokens, options.max_chunk_tokens), overlap_tokens=options.overlap_tokens,
    )
    stored = await embed_chunks(chunks, store=store, embedder=embedder, reuse=not options.force, report=report)
    await store.save_page(record, stored)
    return "added" if known is None else "updated"


def _short_error(error: BaseException) -> str:
    text = one_line(error)
    return text if len(text) <= 300 else text[:297] + "..."


async def sync_space(
    space_key: str,
    *,
    source: PageSource,
    store: PageStore,
    embedder: Embedder,
    report: SyncReport,
    options: SyncOptions = SyncOptions(),
    progress: ProgressCallback | None = None,
    on_failure: FailureCallback | None = None,
    converter: Converter | None = None,
) -> None:
    """Bring one space's pages in the knowledge base in line with Confluence.

    Raises ListingIncomplete (after saving nothing and deleting nothing) when the space can't be listed.
    """
    space = await source.get_space(space_key)
    await store.upsert_space(space.key, space_id=space.space_id, name=space.name, url=space.url)
    refs = await source.list_pages(space.key)  # ListingIncomplete propagates: nothing is deleted
    if options.include_blogposts:
        try:
            posts = await source.list_blogposts(space.key)
        except (ConfluenceError, KeyError, TypeError, ValueError) as err:
            raise ListingIncomplete(space.key, err, pages_listed=len(refs)) from err
        report.blogposts_seen += len(posts)
        refs = [*refs, *posts]
    fingerprints: dict[str, str] | None = None
    if options.include_comments:
        try:
            fingerprints = await source.comment_fingerprints()
        except ConfluenceError as err:  # comments of unchanged pages wait for the next sync
            report.warnings.append(f"{space.key}: comments could not be listed: {err}")
    known = await store.known_versions(space.key)
    report.pages_seen += len(refs)
    todo = pages_to_fetch(refs, known, force=options.force, include_restricted=options.include_restricted,
                          comments=fingerprints)
    report.pages_unchanged += len(refs) - len(todo)
    listed = {ref.page_id for ref in refs}
    leaving: set[str] = set()
    done = 0
    semaphore = asyncio.Semaphore(options.concurrency)

    async def fail(ref: PageRef, url: str, error: BaseException) -> None:
        report.pages_failed += 1
        failure = PageFailure(page_id=ref.page_id, title=ref.title, url=url, error=_short_error(error))
        report.failures.append(failure)
        logger.warning("page %s (%s) failed: %s", ref.page_id, ref.title, failure.error)
        if on_failure is not None:
            await on_failure(space.key, failure)

    async def one(ref: PageRef) -> None:
        nonlocal done
        async with semaphore:
            try:
                page = await source.fetch_page(ref.page_id, content_type=ref.content_type)
                report.bodies_fetched += 1
                if page.restricted and not options.include_restricted:
                    # Kept as a row without chunks: never searchable, not downloaded again until edited.
                    report.pages_skipped += 1
                    await store.save_page(page_record(page, "restricted", status="restricted"), [])
                else:
                    outcome = await index_page(
                        page, known=known.get(ref.page_id), store=store, embedder=embedder,
                        options=options, report=report, source=source, converter=converter,
                        # The site-wide listing says which pages have comments: others cost no request.
                        fetch_comments=fingerprints is None or ref.page_id in fingerprints,
                    )
                    if outcome == "added":
                        report.pages_added += 1
                    elif outcome == "updated":
                        report.pages_updated += 1
                    else:
                        report.pages_unchanged += 1
            except PageForbidden:
                # The sync user can't read it, so neither should anyone asking through the bot.
                report.pages_skipped += 1
                leaving.add(ref.page_id)
            except ConfluenceError as error:
                if error.status != 404:
                    await fail(ref, ref.url, error)
                else:
                    # Deleted since the listing, or restricted (Cloud answers 404 for pages you can't see).
                    report.pages_skipped += 1
                    leaving.add(ref.page_id)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # one bad page never stops the others
                await fail(ref, ref.url, error)
            done += 1
            if progress is not None:
                await progress(Progress(space.key, done, len(todo)))

    tasks = [asyncio.ensure_future(one(ref)) for ref in todo]
    try:
        await asyncio.gather(*tasks)
    finally:
        # Something escaped a page (the database went away, so not even the failure could be recorded): stop
        # the other pages too, or they would go on fetching and writing after the run has ended.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    gone = {page_id for page_id in known if page_id not in listed}
    if deletion_allowed(len(gone), len(known), max_fraction=options.max_delete_fraction, force=options.force):
        leaving |= gone
    else:
        message = (
            f"{space.key}: {len(gone)} of {len(known)} pages are no longer listed; not deleting them "
            f"(more than {options.max_delete_fraction:.0%} of the space). Run with --force if this is right."
        )
        logger.warning(message)
        report.warnings.append(message)
    report.pages_deleted += await store.delete_pages(sorted(p for p in leaving if p in known))
    if options.include_attachments:
        await _sync_files(space.key, refs, source=source, store=store, embedder=embedder, report=report,
                          options=options, on_failure=on_failure)
    else:  # switched off: the files indexed before leave
        report.attachments_deleted += await store.delete_attachments(list(await store.known_attachments(space.key)))
    await store.mark_space_synced(space.key)


async def _sync_files(
    space_key: str, refs: Sequence[PageRef], *, source: PageSource, store: PageStore, embedder: Embedder,
    report: SyncReport, options: SyncOptions, on_failure: FailureCallback | None,
) -> None:
    """Files of the pages now indexed (current, not restricted, listed): ingest/attachments.py."""
    indexed = await store.known_versions(space_key)
    titles = {ref.page_id: ref.title for ref in refs}
    hosts = {
        page_id: HostPage(page_id, titles[page_id], titles[page_id])
        for page_id, seen in indexed.items()
        if page_id in titles and seen.status == "current" and seen.checksum
    }

    async def embed(chunks: Sequence[Chunk]) -> list[StoredChunk]:
        return await embed_chunks(chunks, store=store, embedder=embedder, reuse=not options.force, report=report)

    async def failed(failure: PageFailure) -> None:
        if on_failure is not None:
            await on_failure(space_key, failure)

    try:
        await sync_attachments(
            space_key, hosts, source=source, store=store, embedder=embedder, embed=embed, report=report,
            options=options.attachments, force=options.force, max_chunk_tokens=options.max_chunk_tokens,
            overlap_tokens=options.overlap_tokens, concurrency=options.concurrency, on_failure=failed,
        )
    except ConfluenceError as err:  # the listing failed: nothing deleted, files wait for the next sync
        message = f"{space_key}: attachments could not be listed, none changed: {err}"
        logger.warning(message)
        report.warnings.append(message)


__all__ = [
    "ListingIncomplete",
    "PageSource",
    "PageStore",
    "Progress",
    "SourceFactory",
    "SyncOptions",
    "index_page",
    "sync_space",
]
