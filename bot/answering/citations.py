"""Pure citation handling: which `[n]` markers an answer cites, renumbering them, numbering sources.

Only citation markers count. `[n]` inside fenced or inline code, and subscripts attached to code-like words
(`pay_by_quarter[3]`, `${arr[5]}`, `a.b[2]`), are text: they are never read as citations nor rewritten.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from bot.answering.models import Source
from db.models import SearchHit

_CODE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]*`", re.DOTALL)
# A marker is `[n]` not followed by `(` (a Markdown link) and not glued to the end of a code-like token.
_MARKER = re.compile(r"\[(\d{1,2})\](?!\()")
_CODE_LIKE_TAIL = re.compile(r"(?:[\w$.{}]*[_$.{}\d][\w$.{}]*|\w)$")
_WORD_TAIL = re.compile(r"[A-Za-z]{2,}$")
_MARKER_END = re.compile(r"[\s.,;:!?)\]\[]|$")


def _prose(text: str) -> str:
    """The text with code spans blanked out (same length, so positions still match)."""
    return _CODE.sub(lambda m: " " * len(m.group(0)), text)


def _markers(text: str) -> Iterator[re.Match[str]]:
    """Citation markers outside code, skipping subscripts such as `pay_by_quarter[3]`."""
    prose = _prose(text)
    for match in _MARKER.finditer(prose):
        before = prose[: match.start()]
        if before and not before[-1].isspace() and before[-1] not in ".,;:!?)]\"'":
            glued = _CODE_LIKE_TAIL.search(before)
            # "statement[1]." is how some models cite; "arr[5]}" or "x_y[2]" is code.
            plain_word = _WORD_TAIL.search(before) is not None and glued is not None and glued.group(0).isalpha()
            if not plain_word or not _MARKER_END.match(prose, match.end()):
                continue
        yield match


def cited_numbers(answer: str) -> list[int]:
    """Source numbers in the order first cited."""
    seen: dict[int, None] = {}
    for match in _markers(answer):
        seen.setdefault(int(match.group(1)), None)
    return list(seen)


def remap_citations(answer: str, mapping: dict[int, int]) -> str:
    """Rewrite `[old]` as `[mapping[old]]`, drop citations not in the mapping, fold `[1][1]` into `[1]`.

    Text inside code and subscripts is left exactly as it was.
    """
    pieces: list[str] = []
    position = 0
    last: int | None = None  # the marker just written, while only white space has followed it
    for match in _markers(answer):
        between = answer[position: match.start()]
        new = mapping.get(int(match.group(1)))
        if between.strip():
            last = None
        if new is None or new == last:
            pieces.append(between.rstrip())  # the marker goes, with the space before it
        else:
            pieces.append(f"{between}[{new}]")
            last = new
        position = match.end()
    pieces.append(answer[position:])
    return "".join(pieces).strip()


def to_source(n: int, hit: SearchHit) -> Source:
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


def cited_item(hit: SearchHit) -> tuple[str, str | None]:
    """What one source number stands for: a page, or one file attached to it."""
    return (hit.page_id, hit.attachment_id)


def distinct_pages(hits: Sequence[SearchHit], *, limit: int = 3) -> list[Source]:
    """The best hit of each page, numbered 1.., for 'closest pages' lists."""
    seen: set[tuple[str, str | None]] = set()
    sources: list[Source] = []
    for hit in hits:
        if cited_item(hit) not in seen:
            seen.add(cited_item(hit))
            sources.append(to_source(len(sources) + 1, hit))
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
        if cited_item(hit) not in page_numbers:
            page_numbers[cited_item(hit)] = len(page_numbers) + 1
            first_hits.append(hit)
        mapping[old] = page_numbers[cited_item(hit)]
    renumbered = remap_citations(text, mapping)
    if not mapping:
        return renumbered, distinct_pages(hits)
    return renumbered, [to_source(n, hit) for n, hit in enumerate(first_hits, start=1)]
