"""Pure extractive answering: the page sentences that best match the question, each cited. No invented text."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bot.answering.citations import cited_item, to_source
from bot.answering.models import Source
from bot.answering.ranking import question_terms
from db.models import SearchHit

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
_WORD = re.compile(r"[\w][\w'-]*", re.UNICODE)
MAX_SENTENCE_CHARS = 400


@dataclass(frozen=True)
class Quote:
    text: str
    source: int  # 1-based index into the hits
    score: float


def split_sentences(text: str) -> list[str]:
    """Sentences and list items of a chunk; a fenced code block stays whole."""
    pieces: list[str] = []
    in_code = False
    code: list[str] = []
    for line in text.splitlines():
        if line.strip().startswith("```"):
            code.append(line)
            if in_code:
                pieces.append("\n".join(code))
                code = []
            in_code = not in_code
            continue
        if in_code:
            code.append(line)
            continue
        line = line.strip()
        if line:
            pieces.extend(s.strip() for s in _SENTENCE_END.split(line) if s.strip())
    if code:
        pieces.append("\n".join(code))
    return pieces


def _stem(word: str) -> str:
    return word[:6] if len(word) > 6 else word


def _is_prose(sentence: str) -> bool:
    return len(sentence) > 40 and not sentence.startswith(("-", "•", "```", "[", "|")) and " " in sentence


def score_sentence(sentence: str, terms: set[str]) -> float:
    lowered = [w.lower() for w in _WORD.findall(sentence)]
    words = {_stem(w) for w in lowered}
    # A long question word also counts inside a compound ("vacuum" in "autovacuum", "replica" in "replication").
    hits = sum(1 for t in terms if t in words or (len(t) >= 5 and any(t in w for w in lowered)))
    if hits == 0:
        return 0.0
    # Prefer sentences dense in question words; very short fragments ("Note:") carry little.
    length_penalty = 1.0 if len(sentence) > 40 else 0.6
    return hits * length_penalty


def pick_quotes(question: str, hits: Sequence[SearchHit], *, max_pages: int = 3) -> list[Quote]:
    """The best sentence of each of the best-ranked pages, in page order.

    One quote per page: the ranking already chose the pages, so a second sentence of the first page would
    only crowd out the next page, which is where the right answer is when the first page is a near miss.
    A page is quoted when one of its sentences shares a word with the question; the best-ranked page always is.
    """
    terms = {_stem(t) for t in question_terms(question)}
    best: dict[str, Quote] = {}
    order: list[str] = []
    for index, hit in enumerate(hits, start=1):
        if hit.page_id not in best and len(order) == max_pages:
            continue
        # The first sentence under a heading that names what was asked about is usually its definition
        # ("work_mem (integer)" → "Sets the base maximum amount of memory…").
        heading = hit.heading_path[-1] if hit.heading_path else hit.title
        heading_bonus = 1.0 if score_sentence(heading, terms) > 0 else 0.0
        rank_bonus = 0.3 / index
        for position, sentence in enumerate(split_sentences(hit.content)):
            if len(sentence) > MAX_SENTENCE_CHARS and not sentence.startswith("```"):
                sentence = sentence[: MAX_SENTENCE_CHARS - 1].rsplit(" ", 1)[0] + "…"
            score = score_sentence(sentence, terms)
            if position == 0 and heading_bonus and _is_prose(sentence):
                score = max(score, 1.0) + heading_bonus
            if score <= 0:
                continue
            quote = Quote(sentence, index, score + rank_bonus)
            if hit.page_id not in best:
                order.append(hit.page_id)
                best[hit.page_id] = quote
            elif quote.score > best[hit.page_id].score:
                best[hit.page_id] = quote
    if hits and hits[0].page_id not in best:
        # The best-ranked page is cited first even when no sentence of it repeats the question's words (a
        # question asked in other words than the page uses): its best chunk's opening sentence stands in.
        first = split_sentences(hits[0].content)
        if first:
            best[hits[0].page_id] = Quote(first[0][:MAX_SENTENCE_CHARS], 1, 0.0)
            order = [hits[0].page_id, *order[: max_pages - 1]]
    chosen = [best[page] for page in order]
    return chosen


@dataclass(frozen=True)
class Extract:
    """An answer of quoted page text: the text with `[n]` after each quote, and the page each `n` is."""

    text: str
    sources: list[Source]


def extractive_answer(question: str, hits: Sequence[SearchHit]) -> Extract | None:
    """Quoted page sentences, each followed by its `[n]`; None when nothing on the pages matches.

    Pages are numbered by their ranking (the best-ranked quoted page is [1] and comes first), not by how well
    a single sentence matched: a sentence score is a weaker signal than the page ranking. Each quote carries
    its source, so quoted text such as `pay_by_quarter[3]` is never re-read as a citation.
    """
    quotes = pick_quotes(question, hits)
    if not quotes:
        return None
    # A file attached to a page is a source of its own (issue 14): numbered apart from its page.
    page_of = {index: cited_item(hits[index - 1]) for index in {q.source for q in quotes}}
    best_index: dict[tuple[str, str | None], int] = {}
    for index in sorted(page_of):
        best_index.setdefault(page_of[index], index)
    numbers = {page: n for n, page in enumerate(sorted(best_index, key=best_index.__getitem__), start=1)}
    ordered = sorted(quotes, key=lambda q: (numbers[page_of[q.source]], -q.score))
    lines = ["Here is what Confluence says:"]
    for quote in ordered:
        n = numbers[page_of[quote.source]]
        lines.append(f"{quote.text}\n[{n}]" if quote.text.startswith("```") else f"• {quote.text} [{n}]")
    sources = [to_source(n, hits[best_index[page] - 1]) for page, n in sorted(numbers.items(), key=lambda x: x[1])]
    return Extract("\n".join(lines), sources)
