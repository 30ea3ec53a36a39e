"""Pure ranking: rank fusion, page-aware ordering, a per-page cap and a recency tie-breaker.

The fusion is the vector leg's cosine similarity plus a reciprocal-rank bonus for the keyword leg's order.
Plain RRF (1/(60+rank) per leg) was measured on the PostgreSQL manual (136 questions, bench/retrieval.py) and
lost to vector-only search (hit@1 0.44 against 0.58): with k=60, vector ranks 1 and 2 differ by 0.0003, so
the keyword leg, weak on natural-language questions, reorders the top. Keeping the similarity itself and
adding 0.1/√rank lets keyword matches break near-ties and lift exact-term hits without overruling a clearly
better semantic match: hit@1 0.60, hit@5 0.90, MRR 0.73 against vector-only 0.58 / 0.90 / 0.72 and
keyword-only 0.19 / 0.38 / 0.28 (weights 0.01 and 0.3 measured worse).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from db.models import SearchHit

STOPWORDS = frozenset(
    """a an and are as at be by can could do does did for from has have how i if in into is it its me my no
    not of on or our should so than that the their them then there these they this to was we were what when
    where which who why will with would you your about any after all also am been before being both but each
    few get got had he her here him his just more most much must nor now off once only other out over own
    same she some such too under until up very via whom yes yet please tell know need want use using"""
    .split()
)
_WORD = re.compile(r"[\w][\w'-]*", re.UNICODE)


def question_terms(question: str) -> list[str]:
    """The meaningful words of a question, lower-cased, in order, without duplicates."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(question.lower()):
        word = word.strip("'-")
        if len(word) > 1 and word not in STOPWORDS:
            seen.setdefault(word, None)
    return list(seen)


def keyword_query(question: str) -> str:
    """The question's meaningful words for the keyword leg, OR-ed (`a or b or c`).

    An AND of every word (what websearch_to_tsquery makes of plain text) matched nothing for 41 of 46
    natural-language questions, so each word is an alternative and ts_rank_cd rewards chunks that match many;
    db/search.py then keeps only the distinctive ones.
    """
    return " or ".join(question_terms(question)[:24])


@dataclass(frozen=True)
class RankingPolicy:
    max_per_page: int = 2
    top_k: int = 6
    vector_weight: float = 1.0
    keyword_weight: float = 0.1  # bonus for keyword rank 1; rank r gets keyword_weight / √r
    # Up to this much score for a page updated today, fading over `recency_half_life_days`: enough to
    # order near-ties by freshness, far too little to lift an irrelevant page over a relevant one.
    recency_weight: float = 0.002
    recency_half_life_days: float = 180.0
    second_chunk_bonus: float = 0.08  # see by_page
    second_chunk_window: float = 0.1


def fuse(
    candidates: Sequence[SearchHit], *, policy: RankingPolicy = RankingPolicy(), now: datetime | None = None
) -> list[SearchHit]:
    """Score candidates by cosine similarity + a keyword reciprocal-rank bonus (+ recency), best first."""
    hits = []
    for c in candidates:
        score = policy.vector_weight * (c.vector_similarity or 0.0)
        if c.keyword_rank is not None:
            score += policy.keyword_weight / math.sqrt(c.keyword_rank)
        if now is not None and c.last_modified is not None and policy.recency_weight:
            age_days = max((now - c.last_modified).total_seconds() / 86400, 0.0)
            score += policy.recency_weight * 0.5 ** (age_days / policy.recency_half_life_days)
        hits.append(replace(c, score=score))
    return sorted(hits, key=lambda h: (-h.score, h.chunk_id))


def cap_per_page(hits: Sequence[SearchHit], *, max_per_page: int, top_k: int) -> list[SearchHit]:
    """Keep at most `max_per_page` chunks of any one page, so one long page can't crowd out the rest."""
    kept: list[SearchHit] = []
    per_page: dict[str, int] = {}
    for hit in hits:
        if per_page.get(hit.page_id, 0) >= max_per_page:
            continue
        per_page[hit.page_id] = per_page.get(hit.page_id, 0) + 1
        kept.append(hit)
        if len(kept) == top_k:
            break
    return kept


def by_page(hits: Sequence[SearchHit], *, policy: RankingPolicy) -> list[SearchHit]:
    """Fused hits regrouped page by page, best page first; within a page, best chunk first.

    A page whose second-best chunk scores almost as well as its best gets up to `second_chunk_bonus`: a page
    that answers the question usually matches in more than one place, while one that merely shares a phrase
    with it matches once. The bonus fades to nothing when the second chunk is `second_chunk_window` below the
    best, so a weak second match (a keyword hit elsewhere on the page) adds nothing. On the tune half of
    bench/data/questions.jsonl, natural questions' first page right: 52.9% → 57.2% (windows 0.05–0.2 within
    one question of each other; a flat 0.4 × second chunk did as well there but let two weak matches outvote
    one strong one in the sample wiki).
    """
    chunks: dict[str, list[SearchHit]] = {}
    for hit in hits:  # already best first
        chunks.setdefault(hit.page_id, []).append(hit)

    def page_score(page_hits: list[SearchHit]) -> float:
        best = page_hits[0].score
        if len(page_hits) < 2 or policy.second_chunk_window <= 0:
            return best
        closeness = max(0.0, 1.0 - (best - page_hits[1].score) / policy.second_chunk_window)
        return best + policy.second_chunk_bonus * closeness

    ordered = sorted(chunks.values(), key=lambda page_hits: (-page_score(page_hits), page_hits[0].chunk_id))
    return [hit for page_hits in ordered for hit in page_hits]


def rank(
    candidates: Sequence[SearchHit], *, policy: RankingPolicy = RankingPolicy(), now: datetime | None = None
) -> list[SearchHit]:
    """The hits to answer from: pages in page-score order, each with its best `max_per_page` chunks."""
    pages = by_page(fuse(candidates, policy=policy, now=now), policy=policy)
    return cap_per_page(pages, max_per_page=policy.max_per_page, top_k=policy.top_k)
