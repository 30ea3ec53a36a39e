"""Values that cross the database boundary. Pure: frozen dataclasses only."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class PageVersion:
    version: int
    checksum: str
    status: str = "current"
    comments_fingerprint: str = ""
    includes: tuple[str, ...] = ()
    content_type: str = "page"


@dataclass(frozen=True)
class StoredChunk:
    """A chunk as written: content plus its embedding."""

    chunk_index: int
    heading_path: tuple[str, ...]
    content: str
    content_hash: str
    token_count: int
    embedding: Any  # numpy array or list[float]; the pgvector codec accepts both


@dataclass(frozen=True)
class PageRecord:
    page_id: str
    space_key: str
    title: str
    url: str
    version: int
    checksum: str
    ancestors: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    restricted: bool = False
    last_modified: datetime | None = None
    # 'current', or 'restricted': a page with read restrictions kept as a row without chunks, so it isn't
    # downloaded again until its version changes.
    status: str = "current"
    content_type: str = "page"  # or 'blogpost'
    comments_fingerprint: str = ""
    comment_count: int = 0
    includes: tuple[str, ...] = ()  # ids of the pages whose content this one inlines


@dataclass(frozen=True)
class AttachmentVersion:
    """What the index holds of one attached file: enough to skip an unchanged one without downloading it."""

    page_id: str
    version: int
    status: str  # indexed | skipped | failed


@dataclass(frozen=True)
class AttachmentRecord:
    attachment_id: str
    page_id: str
    space_key: str
    title: str
    media_type: str
    file_size: int
    version: int
    url: str
    status: str = "indexed"
    error: str | None = None


@dataclass(frozen=True)
class SearchHit:
    """One retrieved chunk with its page: found by either search leg (rank None: not found by that leg),
    scored by its similarity, then by ranking's fused score."""

    chunk_id: int
    page_id: str
    space_key: str
    title: str
    url: str
    breadcrumb: tuple[str, ...]
    heading_path: tuple[str, ...]
    content: str
    score: float
    vector_similarity: float | None = None
    vector_rank: int | None = None
    keyword_rank: int | None = None
    last_modified: datetime | None = None
    version: int = 0
    # Set when the chunk comes from a file attached to the page (page_id stays the page's).
    attachment_id: str | None = None
    attachment_title: str | None = None
    attachment_url: str | None = None


@dataclass(frozen=True)
class SyncRun:
    id: int
    trigger: str
    requested_by: str | None
    spaces: tuple[str, ...]
    force: bool
    status: str
    started_at: datetime
    finished_at: datetime | None
    counters: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class Audience:
    """Who will see an answer when CONFLUENCE_PERMISSIONS=per-user: one Confluence account (its own access),
    or `account_id=None`, everyone in the organisation (only pages every member may read)."""

    account_id: str | None = None
