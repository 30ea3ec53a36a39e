"""Pure ranking: rank fusion, a per-page cap, a recency tie-breaker and the evidence test.

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


def rank(
    candidates: Sequence[SearchHit], *, policy: RankingPolicy = RankingPolicy(), now: datetime | None = None
) -> list[SearchHit]:
    return cap_per_page(fuse(candidates, policy=policy, now=now), max_per_page=policy.max_per_page,
                        top_k=policy.top_k)


@dataclass(frozen=True)
class EvidencePolicy:
    """When retrieval is too weak to answer. Similarities are the embedding model's cosine similarities.

    One threshold doesn't separate answerable from unanswerable questions (measured on all-MiniLM-L6-v2:
    answerable median 0.69 but as low as 0.40; unanswerable 0.26–0.45), so a middling similarity also needs
    the question's own words to appear in the best chunks.
    """

    refuse_below: float = 0.30
    confident_above: float = 0.50
    min_term_coverage: float = 0.5


def term_coverage(question: str, hits: Sequence[SearchHit]) -> float:
    """Share of the question's meaningful words that occur in the top chunks (title and headings count)."""
    terms = question_terms(question)
    if not terms:
        return 0.0
    text = " ".join(
        f"{h.title} {' '.join(h.heading_path)} {h.content}" for h in hits[:3]
    ).lower()
    words = set(_WORD.findall(text))
    found = sum(1 for t in terms if t in words or any(w.startswith(t[:5]) for w in words if len(t) > 5))
    return found / len(terms)


def has_enough_evidence(question: str, hits: Sequence[SearchHit], policy: EvidencePolicy) -> bool:
    if not hits:
        return False
    best = max(h.vector_similarity or 0.0 for h in hits)
    if best < policy.refuse_below:
        return False
    if best >= policy.confident_above:
        return True
    return term_coverage(question, hits) >= policy.min_term_coverage


def top_similarity(hits: Sequence[SearchHit]) -> float | None:
    return max((h.vector_similarity or 0.0 for h in hits), default=None)


# Where each embedding model's cosine similarities put "no evidence" and "clearly relevant".
EVIDENCE_BY_MODEL = {
    "all-MiniLM-L6-v2": EvidencePolicy(refuse_below=0.35, confident_above=0.45, min_term_coverage=0.5),
    "text-embedding-3-small": EvidencePolicy(refuse_below=0.20, confident_above=0.45),
}


def evidence_policy(model: str) -> EvidencePolicy:
    return EVIDENCE_BY_MODEL.get(model, EvidencePolicy(refuse_below=0.15, confident_above=0.5))
