"""Values that flow through a sync: what Confluence lists, what a page holds, what gets embedded.

Pure: frozen dataclasses only, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Space:
    """A Confluence space as the API describes it."""

    space_id: str
    key: str
    name: str
    url: str


@dataclass(frozen=True)
class PageRef:
    """One row of a space listing: enough to decide whether the body must be fetched (no body)."""

    page_id: str
    space_key: str
    title: str
    version: int
    status: str = "current"
    url: str = ""
    content_type: str = "page"  # or "blogpost"


@dataclass(frozen=True)
class Page:
    """A page with its storage-format body, as fetched from Confluence."""

    page_id: str
    space_key: str
    title: str
    version: int
    url: str
    body: str
    ancestors: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    status: str = "current"
    last_modified: datetime | None = None
    restricted: bool = False
    content_type: str = "page"  # or "blogpost"

    @property
    def breadcrumb(self) -> str:
        return " > ".join((*self.ancestors, self.title))


@dataclass(frozen=True)
class Comment:
    """A footer comment or a resolved inline comment, with its storage-format body."""

    comment_id: str
    page_id: str
    version: int
    author_id: str
    created: datetime | None
    body: str
    inline: bool = False
    author_name: str = ""  # when the API gave it (Data Center); Cloud gives only the account id


@dataclass(frozen=True)
class AttachmentRef:
    """One file attached to a page or blog post, as the attachment listing describes it (no bytes)."""

    attachment_id: str
    page_id: str
    title: str  # the file name
    media_type: str
    file_size: int
    version: int
    url: str  # where a reader opens it
    download_path: str  # where the client downloads it, relative to the site


@dataclass(frozen=True)
class IncludedPage:
    """A page whose content an include / excerpt-include macro inlines."""

    page_id: str
    space_key: str
    title: str
    body: str


@dataclass(frozen=True)
class Section:
    """Text under one heading; `heading_path` runs from the outermost heading to this one."""

    heading_path: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class Chunk:
    """A token-bounded piece of a page, ready to embed.

    `content` is what is shown and cited; `embed_text` adds the title, breadcrumb and heading path so the
    vector knows where the text sits; `content_hash` (sha256 of `embed_text`) lets a re-sync reuse the
    stored embedding of an unchanged chunk.
    """

    index: int
    heading_path: tuple[str, ...]
    content: str
    embed_text: str
    content_hash: str
    token_count: int


@dataclass(frozen=True)
class PageFailure:
    page_id: str
    title: str
    url: str
    error: str


@dataclass
class SyncReport:
    """Counters of one sync run over one or more spaces (mutable while the run goes on)."""

    spaces: list[str] = field(default_factory=list)
    pages_seen: int = 0
    pages_added: int = 0
    pages_updated: int = 0
    pages_unchanged: int = 0
    pages_deleted: int = 0
    pages_failed: int = 0
    pages_skipped: int = 0
    bodies_fetched: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    embedding_tokens: int = 0
    blogposts_seen: int = 0
    comments_indexed: int = 0
    attachments_indexed: int = 0
    attachments_unchanged: int = 0
    attachments_downloaded: int = 0
    attachments_deleted: int = 0
    attachments_skipped: int = 0
    attachments_failed: int = 0
    failures: list[PageFailure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # "file name (on Page title): reason", for files left out on purpose (too big, type not allowed).
    skipped_files: list[str] = field(default_factory=list)
