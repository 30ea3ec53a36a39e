"""Pure citation handling: which `[n]` markers an answer cites, renumbering them, numbering sources."""

from __future__ import annotations

import re
from collections.abc import Sequence

from bot.answering.models import Source
from db.models import SearchHit

_CITATION = re.compile(r"\[(\d{1,2})\]")


def cited_numbers(answer: str) -> list[int]:
    """Source numbers in the order first cited."""
    seen: dict[int, None] = {}
    for match in _CITATION.finditer(answer):
        seen.setdefault(int(match.group(1)), None)
    return list(seen)


_SPACED_CITATION = re.compile(r"(\s*)\[(\d{1,2})\]")
_REPEATED_CITATION = re.compile(r"(\[\d{1,2}\])(?:\s*\1)+")


def remap_citations(answer: str, mapping: dict[int, int]) -> str:
    """Rewrite `[old]` as `[mapping[old]]`, drop citations not in the mapping, fold `[1][1]` into `[1]`."""

    def replace(match: re.Match[str]) -> str:
        new = mapping.get(int(match.group(2)))
        return f"{match.group(1)}[{new}]" if new is not None else ""

    return _REPEATED_CITATION.sub(r"\1", _SPACED_CITATION.sub(replace, answer)).strip()





def _source(n: int, hit: SearchHit) -> Source:
    if hit.attachment_id is not None:  # a file is cited as "file name (on Page title)", linking the file
        title = f"{hit.attachment_title} (on {hit.title})"
        return Source(
            n=n, title=title, url=hit.attachment_url or hit.url, space_key=hit.space_key, page_id=hit.page_id,
            score=hit.score, breadcrumb=" > ".join((*hit.breadcrumb, hit.title, str(hit.attachment_title))),
            version=hit.version, attachment_id=hit.attachment_id,
        )
    return Source(
        n=n, title=hit.title, url=hit.url, space_key=hit.space_key, page_id=hit.page_id, score=hit.score,
        breadcrumb=" > ".join((*hit.breadcrumb, hit.title)), version=hit.version,
    )


def _cited_item(hit: SearchHit) -> tuple[str, str | None]:
    """What one source number stands for: a page, or one file attached to it."""
    return (hit.page_id, hit.attachment_id)


def distinct_pages(hits: Sequence[SearchHit], *, limit: int = 3) -> list[Source]:
    """The best hit of each page, numbered 1.., for 'closest pages' lists."""
    seen: set[tuple[str, str | None]] = set()
    sources: list[Source] = []
    for hit in hits:
        if _cited_item(hit) not in seen:
            seen.add(_cited_item(hit))
            sources.append(_source(len(sources) + 1, hit))
        if len(sources) == limit:
            break
    return sources


def cite(text: str, hits: Sequence[SearchHit]) -> tuple[str, list[Source]]:
    """Keep the pages the text cites, one number per page, numbered by first citation.

    Two chunks of one page share a number. An answer that cites nothing valid keeps its top pages as
    sources: an answer never goes out unsourced.
    """
    page_numbers: dict[tuple[str, str | None], int] = {}
    first_hits: list[SearchHit] = []
    mapping: dict[int, int] = {}
    for old in cited_numbers(text):
        if not 1 <= old <= len(hits):
            continue
        hit = hits[old - 1]
        if _cited_item(hit) not in page_numbers:
            page_numbers[_cited_item(hit)] = len(page_numbers) + 1
            first_hits.append(hit)
        mapping[old] = page_numbers[_cited_item(hit)]
    renumbered = remap_citations(text, mapping)
    if not mapping:
        return renumbered, distinct_pages(hits)
    return renumbered, [_source(n, hit) for n, hit in enumerate(first_hits, start=1)]
