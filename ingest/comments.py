"""A page's text as indexed: its body with mentions named and includes inlined, then its comments.

Comments (footer comments and resolved inline comments, where decisions get recorded) are indexed with their
page and cited as the page; each keeps its author and date in its heading ("Comment by Dana Scully,
2026-03-04"). Their "id:version" fingerprint is stored with the page, so the next sync re-reads a page whose
comments changed though its own version didn't (adding a comment doesn't make a new page version).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

from ingest.confluence_content import comments_fingerprint
from ingest.convert import Converter
from ingest.models import Comment, IncludedPage, Page, Section
from ingest.storage_format import MAX_INCLUDE_DEPTH, references, to_sections

logger = logging.getLogger(__name__)


class ContentSource(Protocol):
    """What building a page's text needs from Confluence (ConfluenceClient satisfies it)."""

    async def fetch_comments(self, page_id: str, *, content_type: str = "page") -> list[Comment]: ...
    async def display_names(self, users: set[tuple[str, str]]) -> dict[str, str]: ...
    async def fetch_included(self, space_key: str, title: str) -> IncludedPage | None: ...


@dataclass(frozen=True)
class PageText:
    sections: list[Section]
    comment_count: int = 0
    comments_fingerprint: str = ""
    includes: tuple[str, ...] = ()  # ids of the included pages


def comment_sections(comments: list[Comment], *, names: dict[str, str], users: dict[str, str]) -> list[Section]:
    """One section per comment under "Comments", headed by who wrote it and when (pure)."""
    sections: list[Section] = []
    for comment in comments:
        author = comment.author_name or names.get(comment.author_id) or comment.author_id or "unknown"
        when = f", {comment.created.date().isoformat()}" if comment.created else ""
        kind = "Resolved inline comment" if comment.inline else "Comment"
        text = "\n\n".join(s.text for s in to_sections(comment.body, title="", users=users) if s.text)
        if text:
            sections.append(Section(("Comments", f"{kind} by {author}{when}"), text))
    return sections


async def page_text(
    page: Page, *, source: ContentSource | None, include_comments: bool = True, resolve: bool = True,
    converter: Converter | None = None,
) -> PageText:
    """The sections to index for `page`: without a source, just its body as stored.

    The body is parsed off the event loop, by `converter` (issue 16)."""
    convert = converter or Converter()
    if source is None:
        return PageText(await convert.to_sections(page.body, title=page.title))
    comments = await source.fetch_comments(page.page_id, content_type=page.content_type) if include_comments else []
    included: dict[str, IncludedPage] = {}
    users: set[tuple[str, str]] = set()
    if resolve:
        refs = await asyncio.to_thread(references, page.body)
        users |= refs.users
        frontier = set(refs.includes)
        for _ in range(MAX_INCLUDE_DEPTH):  # breadth first, each title fetched once: cycles end here
            found: set[tuple[str | None, str]] = set()
            for space_key, title in sorted(frontier, key=lambda t: (t[0] or "", t[1])):
                if title in included or title == page.title:
                    continue
                target = await source.fetch_included(space_key or page.space_key, title)
                if target is None:
                    logger.info("page %s includes %r, which can't be read", page.page_id, title)
                    continue
                included[title] = target
                more = references(target.body)
                users |= more.users
                found |= more.includes
            frontier = found
        for comment in comments:
            users |= references(comment.body).users
    users |= {("ri:account-id", c.author_id) for c in comments if c.author_id and not c.author_name}
    names = await source.display_names(users) if users else {}
    sections = await convert.to_sections(page.body, title=page.title, users=names,
                                         includes={t: p.body for t, p in included.items()})
    sections += comment_sections(comments, names=names, users=names)
    return PageText(
        sections,
        comment_count=len(comments),
        comments_fingerprint=comments_fingerprint((c.comment_id, c.version) for c in comments),
        includes=tuple(sorted({p.page_id for p in included.values()})),
    )
