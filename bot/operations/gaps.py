"""Knowledge gaps: what people asked that Confluence didn't answer, grouped by topic.

A question counts when it was refused, got a 👎, or was answered on weak evidence (best similarity below the
model's `confident_above`). Distinct questions are embedded and grouped greedily: each joins the group whose
centroid is most similar if that similarity reaches `threshold`, else starts a new group. Groups are ranked
by how often they were asked.

Why 0.6 (measured on 23 questions about 5 topics and 7 near-miss pairs): with all-MiniLM-L6-v2, paraphrases
of one topic sit 0.55–0.88 from the centroid of the others, while near-miss topics sharing a sentence shape
("reset my VPN password" / "reset my SSO password" 0.57, "expense a taxi" / "expense a hotel stay" 0.51,
"parental leave policy" / "vacation policy" 0.55) stay below 0.6; unrelated topics are below 0.37. Splitting
a topic in two costs a reader less than merging two topics under one label.

Users' identities never leave the database (see db/gaps.py), and mentions or e-mail addresses inside the
question text are replaced before anything is shown.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bot.answering.evidence import evidence_policy
from db.gaps import UnansweredQuestion, unanswered_questions

if TYPE_CHECKING:
    import asyncpg

    from ingest.embedders import Embedder

DEFAULT_THRESHOLD = 0.6
DEFAULT_MAX_QUESTIONS = 2000  # newest first; bounds the embedding work of one report
EXAMPLES_PER_GROUP = 3
EXCLUDED_SURFACES = ("eval",)  # golden questions refuse on purpose; they are not what the team asks

_SLACK_MENTION = re.compile(r"<[@#!](?:subteam\^)?[A-Z0-9]+(?:\|[^>]*)?>")
_HANDLE = re.compile(r"(?<![\w.@])@(?!(?:channel|here|everyone)\b)[\w.-]+", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_TRAILING = re.compile(r"[\s?!.…]+$")


# ---- pure ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GapReasons:
    """How many of a group's questions were refused, got a 👎, or were answered on weak evidence.

    A question can count under several reasons; `weak` only counts answered ones.
    """

    refused: int = 0
    thumbs_down: int = 0
    weak: int = 0

    def __add__(self, other: GapReasons) -> GapReasons:
        return GapReasons(self.refused + other.refused, self.thumbs_down + other.thumbs_down,
                          self.weak + other.weak)


@dataclass(frozen=True)
class DistinctQuestion:
    """One wording (compared case- and punctuation-insensitively) and every time it was asked."""

    text: str
    asks: int
    reasons: GapReasons
    last_asked: datetime


@dataclass(frozen=True)
class GapGroup:
    label: str  # the wording closest to the group's centroid
    count: int  # questions asked, repeats included
    examples: tuple[str, ...]  # up to 3 distinct wordings, the label first
    reasons: GapReasons
    last_asked: datetime
    distinct: int = field(default=1)

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label, "count": self.count, "distinct_questions": self.distinct,
            "examples": list(self.examples),
            "reasons": {"refused": self.reasons.refused, "thumbs_down": self.reasons.thumbs_down,
                        "weak": self.reasons.weak},
            "last_asked": self.last_asked.isoformat(timespec="seconds"),
        }


def redact_identities(text: str) -> str:
    """Mention tokens, @handles and e-mail addresses → `@someone`/`someone@…`; @here stays (escaped later)."""
    text = _SLACK_MENTION.sub("@someone", text)
    text = _EMAIL.sub("someone@…", text)
    return _HANDLE.sub("@someone", text)


def question_key(text: str) -> str:
    """Two askings are the same question when they differ only in case, spacing or final punctuation."""
    return _TRAILING.sub("", " ".join(text.split())).casefold()


def reasons_of(row: UnansweredQuestion, *, weak_below: float) -> GapReasons:
    weak = not row.refused and row.top_score is not None and row.top_score < weak_below
    return GapReasons(refused=int(row.refused), thumbs_down=int(row.thumbs_down), weak=int(weak))


def distinct_questions(rows: Sequence[UnansweredQuestion], *, weak_below: float) -> list[DistinctQuestion]:
    """Merge repeats; most asked first, then most recent. Each keeps its most recent wording."""
    merged: dict[str, DistinctQuestion] = {}
    for row in rows:
        reasons = reasons_of(row, weak_below=weak_below)
        if reasons == GapReasons():
            continue  # fetched for a weak score, but under the caller's threshold it isn't a gap
        text = redact_identities(" ".join(row.question.split()))
        key = question_key(text)
        seen = merged.get(key)
        if seen is None:
            merged[key] = DistinctQuestion(text, 1, reasons, row.asked_at)
        else:
            newer = row.asked_at > seen.last_asked
            merged[key] = DistinctQuestion(
                text if newer else seen.text, seen.asks + 1, seen.reasons + reasons,
                max(seen.last_asked, row.asked_at),
            )
    return sorted(merged.values(), key=lambda q: (-q.asks, -q.last_asked.timestamp(), q.text))


def cluster(vectors: Sequence[Sequence[float]] | NDArray[np.float64], *, threshold: float) -> list[list[int]]:
    """Greedy single-pass grouping of unit vectors, in the order given; returns indices per group.

    Each vector joins the group with the most similar centroid (cosine) when that reaches `threshold`.
    Every centroid is compared in one matrix product: the pairwise Python loop took 12.7 s for 2,000
    distinct questions (issue 16).
    """
    matrix = np.asarray(vectors, dtype=np.float64)
    if matrix.size == 0:
        return []
    matrix = matrix.reshape(len(matrix), -1)
    sums = np.zeros_like(matrix)  # one row per group: the sum of its members (the centroid's direction)
    norms = np.zeros(len(matrix))
    groups: list[list[int]] = []
    for i, vector in enumerate(matrix):
        count = len(groups)
        if count:
            dots = sums[:count] @ vector
            similarities = np.divide(dots, norms[:count], out=np.zeros(count), where=norms[:count] > 0)
            best = int(np.argmax(similarities))  # the first of equals, as a strict `>` scan would pick
            if similarities[best] >= threshold:
                sums[best] += vector
                norms[best] = np.linalg.norm(sums[best])
                groups[best].append(i)
                continue
        sums[count] = vector
        norms[count] = np.linalg.norm(vector)
        groups.append([i])
    return groups


def group_gaps(
    questions: Sequence[DistinctQuestion],
    vectors: Sequence[Sequence[float]],
    *,
    threshold: float = DEFAULT_THRESHOLD,
) -> list[GapGroup]:
    """Distinct questions (with one embedding each) → groups, most asked first."""
    if len(questions) != len(vectors):
        raise ValueError(f"{len(questions)} questions but {len(vectors)} embeddings")
    matrix = np.asarray(vectors, dtype=np.float64).reshape(len(vectors), -1)
    groups = []
    for members in cluster(matrix, threshold=threshold):
        centroid = matrix[members].sum(axis=0)
        closeness = matrix[members] @ centroid
        label_at = max(range(len(members)), key=lambda m: (round(float(closeness[m]), 9), -m))
        ordered = [members[label_at]] + [m for m in members if m != members[label_at]]
        reasons = GapReasons()
        for m in members:
            reasons = reasons + questions[m].reasons
        groups.append(GapGroup(
            label=questions[ordered[0]].text,
            count=sum(questions[m].asks for m in members),
            examples=tuple(questions[m].text for m in ordered[:EXAMPLES_PER_GROUP]),
            reasons=reasons,
            last_asked=max(questions[m].last_asked for m in members),
            distinct=len(members),
        ))
    return sorted(groups, key=lambda g: (-g.count, -g.last_asked.timestamp(), g.label))


def reasons_text(reasons: GapReasons) -> str:
    return f"refused {reasons.refused} · 👎 {reasons.thumbs_down} · weak evidence {reasons.weak}"


def gaps_json(groups: Sequence[GapGroup], *, days: int) -> dict[str, Any]:
    return {"days": days, "questions": sum(g.count for g in groups), "groups": [g.to_json() for g in groups]}


# ---- I/O at the edges ------------------------------------------------------------------------------------


def default_weak_below(model_name: str) -> float:
    """Answers below the model's `confident_above` passed the evidence test on word overlap alone."""
    return evidence_policy(model_name).confident_above


async def collect_gaps(
    pool: asyncpg.Pool,
    embedder: Embedder,
    *,
    days: int,
    limit: int = 10,
    weak_below: float | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    max_questions: int = DEFAULT_MAX_QUESTIONS,
) -> list[GapGroup]:
    """The top `limit` gap groups of the last `days` days."""
    weak = default_weak_below(embedder.model_name) if weak_below is None else weak_below
    async with pool.acquire() as conn:
        rows = await unanswered_questions(
            conn, days=days, weak_below=weak, exclude_surfaces=EXCLUDED_SURFACES, limit=max_questions
        )
    questions = distinct_questions(rows, weak_below=weak)
    if not questions:
        return []
    vectors = await embedder.embed([q.text for q in questions])
    # CPU-bound (2,000 questions: a matrix product per question): a worker thread keeps the loop answering.
    groups = await asyncio.to_thread(group_gaps, questions, vectors, threshold=threshold)
    return groups[:limit]
