"""Files attached to indexed pages: list → diff by attachment version → download → extract → chunk → save.

An unchanged attachment (same id and version as indexed) is never downloaded again; one the listing no longer
has leaves the index. Files over the size cap or of a type off the allow-list are recorded as skipped (listed
in the sync report, not downloaded again until their version changes). A file that can't be read — corrupt,
encrypted, a zip bomb, too slow — is recorded as failed with the reason and reported; the page is unaffected.
Chunks of a file are cited as "file name (on Page title)".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from db.models import AttachmentRecord, AttachmentVersion, StoredChunk
from ingest.chunker import chunk_sections
from ingest.embedders import Embedder
from ingest.errors import ConfluenceError
from ingest.extract import DEFAULT_TYPES, ExtractionFailed, ExtractLimits, extract_sections, file_kind
from ingest.models import AttachmentRef, Chunk, PageFailure, SyncReport
from ingest.tokens import CharacterBoundTokenizer

logger = logging.getLogger(__name__)


class AttachmentSource(Protocol):
    async def list_attachments(self) -> dict[str, list[AttachmentRef]] | None: ...
    async def download_attachment(self, ref: AttachmentRef, *, max_bytes: int) -> bytes: ...


class AttachmentStore(Protocol):
    async def known_attachments(self, space_key: str) -> dict[str, AttachmentVersion]: ...
    async def save_attachment(
        self, record: AttachmentRecord, chunks: Sequence[StoredChunk], *, page_title: str
    ) -> None: ...
    async def delete_attachments(self, attachment_ids: Sequence[str]) -> int: ...


@dataclass(frozen=True)
class AttachmentOptions:
    max_bytes: int = 20 * 1024 * 1024  # CONFLUENCE_ATTACHMENT_MAX_MB
    types: tuple[str, ...] = DEFAULT_TYPES
    limits: ExtractLimits = ExtractLimits()


@dataclass(frozen=True)
class HostPage:
    """An indexed page whose files may be indexed: its id, title and breadcrumb."""

    page_id: str
    title: str
    breadcrumb: str


def display_title(ref: AttachmentRef, page_title: str) -> str:
    return f"{ref.title} (on {page_title})"


async def sync_attachments(
    space_key: str,
    hosts: dict[str, HostPage],
    *,
    source: AttachmentSource,
    store: AttachmentStore,
    embedder: Embedder,
    embed: Callable[[Sequence[Chunk]], Awaitable[list[StoredChunk]]],
    report: SyncReport,
    options: AttachmentOptions,
    force: bool,
    max_chunk_tokens: int,
    overlap_tokens: int,
    concurrency: int,
    on_failure: Callable[[PageFailure], Awaitable[None]],
) -> None:
    """Bring the files of `hosts` (the space's indexed pages) in line with Confluence; `embed` turns chunks
    into stored chunks (reusing stored embeddings), as for pages."""
    listing = await source.list_attachments()
    if listing is None:
        return
    known = await store.known_attachments(space_key)
    wanted = {ref.attachment_id: ref for page_id in hosts for ref in listing.get(page_id, [])}
    gone = [a for a in known if a not in wanted]
    if gone:
        report.attachments_deleted += await store.delete_attachments(gone)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(ref: AttachmentRef) -> None:
        host = hosts[ref.page_id]
        seen = known.get(ref.attachment_id)
        if seen is not None and seen.version == ref.version and seen.page_id == ref.page_id and not force:
            report.attachments_unchanged += 1
            return
        record = AttachmentRecord(
            attachment_id=ref.attachment_id, page_id=ref.page_id, space_key=space_key, title=ref.title,
            media_type=ref.media_type, file_size=ref.file_size, version=ref.version, url=ref.url,
        )
        name = display_title(ref, host.title)
        kind = file_kind(ref.title, ref.media_type, options.types)
        reason = None
        if kind is None:
            reason = f"type not indexed ({ref.media_type or 'unknown'})"
        elif ref.file_size > options.max_bytes:
            reason = f"{ref.file_size / (1 << 20):.3g} MB, over the {options.max_bytes / (1 << 20):.3g} MB limit"
        if reason is not None:
            report.attachments_skipped += 1
            report.skipped_files.append(f"{name}: {reason}")
            await store.save_attachment(_with(record, "skipped", reason), [], page_title=host.title)
            return
        assert kind is not None
        async with semaphore:
            try:
                data = await source.download_attachment(ref, max_bytes=options.max_bytes)
                report.attachments_downloaded += 1
                sections = await extract_sections(data, kind, limits=options.limits)
            except ValueError as too_big:  # the listing's size was stale
                report.attachments_skipped += 1
                report.skipped_files.append(f"{name}: {too_big}")
                await store.save_attachment(_with(record, "skipped", str(too_big)), [], page_title=host.title)
                return
            except ExtractionFailed as unreadable:
                # Recorded as failed at this version: not downloaded again until the file changes.
                await _fail(name, ref, str(unreadable))
                await store.save_attachment(_with(record, "failed", str(unreadable)), [], page_title=host.title)
                return
            except ConfluenceError as error:  # tried again next sync
                await _fail(name, ref, str(error))
                return
            chunks = chunk_sections(
                sections, title=name, breadcrumb=f"{host.breadcrumb} > {ref.title}",
                tokenizer=CharacterBoundTokenizer(embedder.tokenizer),
                max_tokens=min(embedder.max_input_tokens, max_chunk_tokens), overlap_tokens=overlap_tokens,
            )
            await store.save_attachment(record, await embed(chunks), page_title=host.title)
            report.attachments_indexed += 1

    async def _fail(name: str, ref: AttachmentRef, error: str) -> None:
        report.attachments_failed += 1
        failure = PageFailure(page_id=ref.page_id, title=name, url=ref.url, error=error[:300])
        report.failures.append(failure)
        logger.warning("file %s failed: %s", name, failure.error)
        await on_failure(failure)

    tasks = [asyncio.ensure_future(one(ref)) for ref in wanted.values()]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _with(record: AttachmentRecord, status: str, error: str) -> AttachmentRecord:
    return AttachmentRecord(
        attachment_id=record.attachment_id, page_id=record.page_id, space_key=record.space_key,
        title=record.title, media_type=record.media_type, file_size=record.file_size, version=record.version,
        url=record.url, status=status, error=error[:300],
    )
