"""Pure evidence test: does the knowledge base cover the question, or does it only share words with it?

Two signals, both needed for an answer:
- similarity: the embedding model's cosine similarity of the best chunk, with the question's own words in
  the best chunks when it is middling (one threshold doesn't separate the two kinds of question);
- the question's subjects: a product, tool or identifier the question is about (`PgBouncer`, `TimescaleDB`,
  `AWS`, `pg_hint_plan`, `ora2pg`) must occur in the knowledge base at all. Questions the wiki can't answer
  but shares vocabulary with ("PgBouncer's pool_mode", "our replication-lag SLO") score as high as answerable
  ones on similarity; the missing subject is what tells them apart. On the tune half of
  bench/data/questions.jsonl, with MiniLM's floor below, unanswerable questions refused 8.7% → 82.6% and
  answerable natural ones 10.1% → 2.2% (held-out half: 43.5% → 87.0% and 5.8% → 2.9%).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bot.answering.ranking import question_terms
from db.models import SearchHit

_WORD = re.compile(r"[\w][\w'-]*", re.UNICODE)
_TOKEN = re.compile(r"[A-Za-z0-9][\w.+'-]*[\w+]|[A-Za-z0-9]")
# SQL written in capitals is code, not a product's name ("DROP TABLE", "VACUUM FULL", "SELECT … FROM").
SQL_KEYWORDS = frozenset("""
    ADD ALL ALTER ANALYZE AND ANY ARRAY ASC BEGIN BETWEEN BIGINT BOOLEAN BY CASCADE CASE CAST CHECK COLUMN COMMIT
    CONSTRAINT COPY CREATE CROSS CURRENT_DATE DATABASE DEFAULT DELETE DESC DISTINCT DO DROP ELSE END EXCEPT EXISTS
    EXPLAIN FALSE FETCH FOR FOREIGN FROM FULL FUNCTION GRANT GROUP HAVING INDEX INNER INSERT INTEGER INTERSECT INTO
    JOIN JSON JSONB KEY LATERAL LEFT LIKE ILIKE LIMIT LOCK NOT NOTIFY NULL OFFSET ONLY ORDER OUTER OVER PARTITION
    PRIMARY REFERENCES REINDEX RETURNING REVOKE RIGHT ROLE ROLLBACK ROW ROWS SCHEMA SELECT SEQUENCE SET SHOW TABLE
    TEXT THEN TIMESTAMP TRIGGER TRUE TRUNCATE UNION UNIQUE UPDATE USING VACUUM VALUES VARCHAR VIEW WHEN WHERE WINDOW
    WITH
""".split())
_HYPHENATED_NAME = re.compile(r"^[A-Za-z0-9]*[A-Z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)+$")  # WAL-G, Auto-Explain
_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+$")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;\"'(]\s*)$")


@dataclass(frozen=True)
class Subject:
    """A term the question is about, as written, and how to look it up in the knowledge base."""

    text: str
    exact: bool  # an identifier (`pg_hint_plan`): it must occur as written, not just its words


def question_subjects(question: str) -> list[Subject]:
    """Names and identifiers in the question: the terms that say what it is about.

    A name is capitalised mid-sentence, CamelCase, a lone acronym of three or more letters, or letters mixed
    with digits (`TimescaleDB`, `AWS`, `ora2pg`); an identifier is snake_case (`sync_replication_slots`).
    Sentence-initial words, short acronyms (`CI`, `FK`), SQL in capitals (`DROP TABLE`) and numbers (`3rd`,
    `2-billion-row`) are not names.
    """
    subjects: dict[str, Subject] = {}
    for match in _TOKEN.finditer(question):
        token = match.group(0).removesuffix("'s").strip(".'-+")
        letters = re.sub(r"[^A-Za-z]", "", token)
        if len(letters) < 3 or token[:1].isdigit():
            continue
        if _IDENTIFIER.match(token):
            subjects.setdefault(token.lower(), Subject(token, exact=True))
            continue
        if not token.isalnum() and not _HYPHENATED_NAME.match(token):
            continue  # en_US.UTF-8, read-only, client's: parts of common words, not a name
        sentence_start = _SENTENCE_START.search(question[: match.start()]) is not None
        named = (
            any(ch.isdigit() for ch in token)
            or (token.isupper() and len(token) >= 3 and token not in SQL_KEYWORDS)
            or (any(ch.isupper() for ch in token[1:]) and not token.isupper())
            or (token[:1].isupper() and not token.isupper() and not sentence_start)
        )
        if named:
            subjects.setdefault(token.lower(), Subject(token, exact=False))
    return list(subjects.values())


def unknown_subjects(
    subjects: Sequence[Subject], chunk_counts: Mapping[str, int], hits: Sequence[SearchHit], *, max_chunks: int
) -> list[str]:
    """The subjects the knowledge base barely mentions (in at most `max_chunks` chunks: a release note, a
    footnote) and the retrieved chunks don't mention at all. A small wiki may name its VPN in one page only:
    when that page is among the hits, the subject is covered."""
    text = " ".join(f"{h.title} {' '.join(h.heading_path)} {h.content}" for h in hits)
    return [
        s.text for s in subjects
        if chunk_counts.get(s.text, max_chunks + 1) <= max_chunks
        and not re.search(rf"(?<![\w-]){re.escape(s.text)}(?![\w-])", text, re.IGNORECASE)
    ]


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
    # A subject mentioned in this few chunks is not something the wiki covers (PgBouncer occurs once in the
    # manual's release notes).
    rare_subject_max_chunks: int = 2


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


def has_enough_evidence(
    question: str, hits: Sequence[SearchHit], policy: EvidencePolicy, *, unknown: Sequence[str] = ()
) -> bool:
    """Enough to answer: similar chunks, and no subject of the question unknown to the knowledge base."""
    if not hits or unknown:
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
# all-MiniLM-L6-v2: with the subject check in place, the word-coverage band (0.35–0.45) refused 12 more of 138
# natural questions and no more unanswerable ones (tune half of bench/data/questions.jsonl; 0.25–0.35 and
# coverage 0.3–0.5 swept), so a similarity of 0.35 is enough on its own.
EVIDENCE_BY_MODEL = {
    "all-MiniLM-L6-v2": EvidencePolicy(refuse_below=0.35, confident_above=0.35),
    "text-embedding-3-small": EvidencePolicy(refuse_below=0.20, confident_above=0.45),
}


def evidence_policy(model: str) -> EvidencePolicy:
    return EVIDENCE_BY_MODEL.get(model, EvidencePolicy(refuse_below=0.15, confident_above=0.5))
