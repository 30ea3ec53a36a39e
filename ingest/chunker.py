"""Sections → token-bounded chunks that carry their page title, breadcrumb and heading path.

Pure: no I/O. The budget is checked with the tokenizer of the model that embeds the chunks, on the full
`embed_text` (header included), so no chunk is ever truncated by the model. Long sections are cut at the
coarsest boundary that fits (paragraph, line, sentence, word, then character), counting every piece once.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ingest.models import Chunk, Section
from ingest.tokens import Tokenizer

# Below this a header plus one character of content may not fit: refuse rather than break the guarantee.
MIN_MAX_TOKENS = 32
# Counts of header and content are added, but a tokenizer may count the joined text a little differently.
_JOIN_MARGIN = 2
# Cut points, coarsest first: each piece keeps the separator it starts with, so pieces join back losslessly.
_LEVELS = (
    re.compile(r"\n[^\S\n]*\n\s*"),  # paragraphs
    re.compile(r"\n"),  # lines (list items, table rows, code lines)
    re.compile(r"(?<=[.!?;:])\s+|(?<=[。！？；])"),  # sentences, also CJK ones without spaces
    re.compile(r"\s+"),  # words
)
_WORDS = _LEVELS[3]
_SENTENCE_END = re.compile(r"[.!?。！？]\s+")
# Blank lines before a piece go, but the indentation of its first line (code) stays.
_LEADING_BLANK_LINES = re.compile(r"[^\S\n]*\n\s*?(?=[^\S\n]*\S)")


@dataclass(frozen=True)
class _Piece:
    text: str
    tokens: int


def chunk_sections(
    sections: list[Section],
    *,
    title: str,
    breadcrumb: str,
    tokenizer: Tokenizer,
    max_tokens: int,
    overlap_tokens: int,
) -> list[Chunk]:
    """Pack small sections under one top heading together, split long ones with overlap, index the result."""
    if max_tokens < MIN_MAX_TOKENS or not 0 <= overlap_tokens < max_tokens:
        raise ValueError(f"need max_tokens >= {MIN_MAX_TOKENS} and 0 <= overlap_tokens < max_tokens")
    headers = _Headers(title=title, breadcrumb=breadcrumb, tokenizer=tokenizer, max_tokens=max_tokens)
    pieces: list[tuple[tuple[str, ...], str]] = []
    for path, content, tokens in _groups(sections, headers, tokenizer):
        budget = headers.budget(path)
        if tokens <= budget:
            pieces.append((path, content))
        else:
            overlap = min(overlap_tokens, budget // 3)
            pieces.extend((path, text) for text in _split(content, tokens, budget, overlap, tokenizer))
    chunks: list[Chunk] = []
    for path, content in pieces:
        for embed_text, tokens in _fit(headers.text(path), content, tokenizer, max_tokens):
            chunks.append(_chunk(len(chunks), path, embed_text, len(headers.text(path)), tokens))
    return chunks


def _chunk(index: int, path: tuple[str, ...], embed_text: str, header_chars: int, tokens: int) -> Chunk:
    return Chunk(
        index=index,
        heading_path=path,
        content=embed_text[header_chars:],
        embed_text=embed_text,
        content_hash=hashlib.sha256(embed_text.encode("utf-8", "surrogatepass")).hexdigest(),
        token_count=tokens,
    )


class _Headers:
    """The "Title: …\\nPath: …" header per heading path, cut to half the budget, its size cached."""

    def __init__(self, *, title: str, breadcrumb: str, tokenizer: Tokenizer, max_tokens: int) -> None:
        self._title = " ".join(title.split())
        self._breadcrumb = " ".join(breadcrumb.split())
        self._tokenizer = tokenizer
        self._max_tokens = max_tokens
        self._cache: dict[tuple[str, ...], tuple[str, int]] = {}

    def text(self, path: tuple[str, ...]) -> str:
        return self._get(path)[0]

    def budget(self, path: tuple[str, ...]) -> int:
        """Tokens left for content under this header."""
        return self._max_tokens - self._get(path)[1] - _JOIN_MARGIN

    def _get(self, path: tuple[str, ...]) -> tuple[str, int]:
        if path not in self._cache:
            where = " > ".join(part for part in (self._breadcrumb, *path) if part)
            header = _header(self._title, where, self._tokenizer, self._max_tokens // 2)
            self._cache[path] = (header, self._tokenizer.count(header))
        return self._cache[path]


def _header(title: str, where: str, tokenizer: Tokenizer, limit: int) -> str:
    """The chunk header, with title and path cut short when a pathological heading would crowd out content."""
    header = f"Title: {title}\nPath: {where}\n\n"
    allowance = limit // 3
    while tokenizer.count(header) > limit and allowance > 0:
        short_title = _longest_prefix(title, 0, allowance, tokenizer).text
        short_where = _longest_prefix(where, 0, allowance, tokenizer).text
        header = f"Title: {short_title}\nPath: {short_where}\n\n"
        allowance -= max(1, allowance // 4)
    return header


def _groups(
    sections: list[Section], headers: _Headers, tokenizer: Tokenizer
) -> Iterator[tuple[tuple[str, ...], str, int]]:
    """(heading path, content, tokens): adjacent sections under one top heading merged while they fit."""
    group: list[Section] = []
    group_tokens = 0
    for section in sections:
        if not section.text.strip():
            continue
        if group and group[0].heading_path[:1] == section.heading_path[:1]:
            path, content = _merge([*group, section])
            tokens = tokenizer.count(content)
            if tokens <= headers.budget(path):
                group, group_tokens = [*group, section], tokens
                continue
        if group:
            yield (*_merge(group), group_tokens)
        group, group_tokens = [section], tokenizer.count(section.text.strip())
    if group:
        yield (*_merge(group), group_tokens)


def _merge(group: list[Section]) -> tuple[tuple[str, ...], str]:
    """Common heading path, and the texts with each one's own sub-heading as a "## …" line."""
    path = group[0].heading_path
    for section in group[1:]:
        path = _common_prefix(path, section.heading_path)
    if len(group) == 1:
        return path, group[0].text.strip()
    parts = []
    for section in group:
        own = section.heading_path[len(path) :]
        parts.append(("## " + " > ".join(own) + "\n" if own else "") + section.text.strip())
    return path, "\n\n".join(parts)


def _common_prefix(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    size = 0
    while size < min(len(a), len(b)) and a[size] == b[size]:
        size += 1
    return a[:size]


def _split(text: str, tokens: int, budget: int, overlap: int, tokenizer: Tokenizer) -> list[str]:
    """Cut text into pieces of at most `budget` tokens, each starting with ~`overlap` tokens of the last."""
    pieces: list[str] = []
    current: list[str] = []
    current_tokens = 0
    fresh = False  # does `current` hold anything beyond the overlap carried over?
    for atom in _atoms(text, tokens, budget, tokenizer, level=0):
        if fresh and current_tokens + atom.tokens > budget:
            pieces.append("".join(current))
            tail = _tail(pieces[-1], overlap, tokenizer)
            keep = tail.text and tail.tokens + atom.tokens <= budget
            current, current_tokens = ([tail.text], tail.tokens) if keep else ([], 0)
        current.append(atom.text)
        current_tokens += atom.tokens
        fresh = True
    if fresh:
        pieces.append("".join(current))
    return [_trim(piece) for piece in pieces if piece.strip()]


def _trim(piece: str) -> str:
    blank = _LEADING_BLANK_LINES.match(piece)
    return (piece[blank.end() :] if blank else piece.lstrip()).rstrip()


def _atoms(text: str, tokens: int, budget: int, tokenizer: Tokenizer, *, level: int) -> list[_Piece]:
    """Pieces of text that each fit the budget, cut at the coarsest boundary possible; they join to `text`."""
    if tokens <= budget:
        return [_Piece(text, tokens)]
    if level == len(_LEVELS):
        return _by_characters(text, budget, tokenizer)
    parts = _cut(text, _LEVELS[level])
    if len(parts) == 1:
        return _atoms(text, tokens, budget, tokenizer, level=level + 1)
    atoms: list[_Piece] = []
    for part in parts:
        atoms.extend(_atoms(part, tokenizer.count(part), budget, tokenizer, level=level + 1))
    return atoms


def _cut(text: str, pattern: re.Pattern[str]) -> list[str]:
    """Split before every separator match (the separator stays with the piece it starts)."""
    cuts = sorted({m.start() for m in pattern.finditer(text) if 0 < m.start() < len(text)})
    bounds = [0, *cuts, len(text)]
    return [text[start:end] for start, end in itertools.pairwise(bounds) if end > start]


def _by_characters(text: str, budget: int, tokenizer: Tokenizer) -> list[_Piece]:
    """Last resort for one enormous word (a URL, base64, CJK without punctuation): cut between characters."""
    pieces: list[_Piece] = []
    start = 0
    while start < len(text):
        piece = _longest_prefix(text, start, budget, tokenizer)
        pieces.append(piece)
        start += len(piece.text)
    return pieces


def _longest_prefix(text: str, start: int, budget: int, tokenizer: Tokenizer) -> _Piece:
    """The longest text[start:end] within budget (at least one character), by galloping then bisecting.

    Each probe counts only about one budget's worth of text, so cutting a long text stays linear.
    """
    if start >= len(text):
        return _Piece("", 0)
    good, good_tokens = start + 1, tokenizer.count(text[start : start + 1])
    step = max(1, budget)
    bad = len(text) + 1
    while start + step <= len(text):
        tokens = tokenizer.count(text[start : start + step])
        if tokens > budget:
            bad = start + step
            break
        good, good_tokens = start + step, tokens
        step *= 2
    else:
        tokens = tokenizer.count(text[start:])
        if tokens <= budget:
            return _Piece(text[start:], tokens)
        bad = len(text)
    while bad - good > 1:
        middle = (good + bad) // 2
        tokens = tokenizer.count(text[start:middle])
        if tokens <= budget:
            good, good_tokens = middle, tokens
        else:
            bad = middle
    return _Piece(text[start:good], good_tokens)


def _tail(text: str, overlap: int, tokenizer: Tokenizer) -> _Piece:
    """About the last `overlap` tokens of text, starting at a word: the context repeated in the next piece."""
    if overlap <= 0:
        return _Piece("", 0)
    words = _cut(text.rstrip(), _WORDS)[-overlap:]  # a word is at least one token
    good, good_tokens, bad = 0, 0, len(words) + 1
    while bad - good > 1:
        middle = (good + bad) // 2
        tokens = tokenizer.count("".join(words[-middle:]))
        if tokens <= overlap:
            good, good_tokens = middle, tokens
        else:
            bad = middle
    tail = "".join(words[-good:]) if good else ""
    # Start the overlap at a line (keeping its indentation) or else a sentence when it holds one.
    line = tail.find("\n", 1)
    sentence = _SENTENCE_END.search(tail)
    start = line if line != -1 else sentence.end() if sentence else 0
    if start and tail[start:].strip():
        return _Piece(tail[start:], tokenizer.count(tail[start:]))
    return _Piece(tail, good_tokens)


def _fit(header: str, content: str, tokenizer: Tokenizer, max_tokens: int) -> list[tuple[str, int]]:
    """(embed_text, tokens) for content under header, re-cut until each exact count is within budget."""
    fitted: list[tuple[str, int]] = []
    pending = [content]
    while pending:
        text = pending.pop()
        tokens = tokenizer.count(header + text)
        if tokens <= max_tokens:
            fitted.append((header + text, tokens))
            continue
        text_tokens = tokenizer.count(text)
        budget = text_tokens - (tokens - max_tokens) - 1
        parts = _split(text, text_tokens, max(1, budget), 0, tokenizer) if len(text) > 1 else []
        if len(parts) < 2:
            raise ValueError(f"cannot fit {text!r} under a {max_tokens}-token budget with this tokenizer")
        pending.extend(reversed(parts))
    return fitted
