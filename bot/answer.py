"""The answer engine shared by Slack, the CLI and the HTTP API.

embed → hybrid search → rank → enough evidence? → prompt → model (or extractive) → keep cited sources → log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from bot import prompts
from bot.extractive import extractive_answer
from bot.llm import ChatModel, ChatModelError
from bot.metrics import Metrics
from bot.prompts import Turn
from bot.ranking import (
    EvidencePolicy,
    RankingPolicy,
    has_enough_evidence,
    keyword_query,
    rank,
    top_similarity,
)
from db import activity, search
from db.activity import QueryLogEntry
from db.models import SearchHit
from ingest.embedders import Embedder

logger = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 2000
DeltaCallback = Callable[[str], Awaitable[None]]


class QuestionError(ValueError):
    """The question can't be answered as asked (empty); the message is for the user."""


@dataclass(frozen=True)
class Source:
    n: int
    title: str
    url: str
    space_key: str
    page_id: str
    score: float
    breadcrumb: str = ""
    version: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "title": self.title, "url": self.url, "space_key": self.space_key,
                "page_id": self.page_id, "score": round(self.score, 6)}


@dataclass(frozen=True)
class AskContext:
    """Who asked, where: recorded in the query log."""

    surface: str = "cli"
    user_id: str | None = None
    channel_id: str | None = None
    thread_ts: str | None = None


@dataclass(frozen=True)
class Answer:
    question: str
    standalone_question: str
    text: str
    sources: list[Source]
    refused: bool
    latency_ms: int
    top_score: float | None = None
    closest: list[Source] = field(default_factory=list)
    chunks_used: int = 0
    mode: str = "extractive"
    truncated: bool = False
    query_id: int | None = None
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "answer": self.text,
            "sources": [s.to_json() for s in self.sources],
            "latency_ms": self.latency_ms,
            "refused": self.refused,
            "closest": [s.to_json() for s in self.closest],
            "chunks_used": self.chunks_used,
            "query_id": self.query_id,
            "mode": self.mode,
            "note": self.note,
            "truncated": self.truncated,
        }


def prepare_question(question: str, *, max_chars: int = MAX_QUESTION_CHARS) -> tuple[str, bool]:
    """Strip, refuse empty, cut very long questions (the caller tells the user it was cut)."""
    text = " ".join(question.split())
    if not text:
        raise QuestionError("Please ask a question, e.g. `@askdocs how do I request VPN access?`")
    if len(text) > max_chars:
        return text[:max_chars].rsplit(" ", 1)[0], True
    return text, False


def _source(n: int, hit: SearchHit) -> Source:
    return Source(
        n=n, title=hit.title, url=hit.url, space_key=hit.space_key, page_id=hit.page_id, score=hit.score,
        breadcrumb=" > ".join((*hit.breadcrumb, hit.title)), version=hit.version,
    )


def distinct_pages(hits: Sequence[SearchHit], *, limit: int = 3) -> list[Source]:
    """The best hit of each page, numbered 1.., for 'closest pages' lists."""
    seen: set[str] = set()
    sources: list[Source] = []
    for hit in hits:
        if hit.page_id not in seen:
            seen.add(hit.page_id)
            sources.append(_source(len(sources) + 1, hit))
        if len(sources) == limit:
            break
    return sources


def cite(text: str, hits: Sequence[SearchHit]) -> tuple[str, list[Source]]:
    """Keep the pages the text cites, one number per page, numbered by first citation.

    Two chunks of one page share a number. An answer that cites nothing valid keeps its top pages as
    sources: an answer never goes out unsourced.
    """
    page_numbers: dict[str, int] = {}
    first_hits: list[SearchHit] = []
    mapping: dict[int, int] = {}
    for old in prompts.cited_numbers(text):
        if not 1 <= old <= len(hits):
            continue
        hit = hits[old - 1]
        if hit.page_id not in page_numbers:
            page_numbers[hit.page_id] = len(page_numbers) + 1
            first_hits.append(hit)
        mapping[old] = page_numbers[hit.page_id]
    renumbered = prompts.remap_citations(text, mapping)
    if not mapping:
        return renumbered, distinct_pages(hits)
    return renumbered, [_source(n, hit) for n, hit in enumerate(first_hits, start=1)]


class AnswerEngine:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        embedder: Embedder,
        chat: ChatModel | None,
        ranking: RankingPolicy = RankingPolicy(),
        evidence: EvidencePolicy = EvidencePolicy(),
        candidates_per_leg: int = 40,
        metrics: Metrics | None = None,
    ) -> None:
        self._pool = pool
        self._embedder = embedder
        self._chat = chat
        self._ranking = ranking
        self._evidence = evidence
        self._candidates_per_leg = candidates_per_leg
        self._metrics = metrics

    @property
    def mode(self) -> str:
        return "llm" if self._chat is not None else "extractive"

    async def retrieve(self, question: str, *, spaces: Sequence[str] | None = None) -> list[SearchHit]:
        [embedding] = await self._embedder.embed([question])
        async with self._pool.acquire() as conn:
            candidates = await search.hybrid_candidates(
                conn, embedding, keyword_query(question), spaces=spaces, limit=self._candidates_per_leg
            )
        return rank(candidates, policy=self._ranking, now=datetime.now(UTC))

    async def standalone(self, question: str, history: Sequence[Turn]) -> str:
        if not history:
            return question
        if self._chat is not None:
            try:
                rewritten = (await self._chat.complete(prompts.build_condense_messages(question, history))).strip()
                if rewritten and len(rewritten) <= 4 * MAX_QUESTION_CHARS:
                    return rewritten
            except ChatModelError as error:
                logger.warning("could not condense the follow-up with the model: %s", error)
        return prompts.standalone_question(question, history)

    async def answer(
        self,
        question: str,
        *,
        history: Sequence[Turn] = (),
        spaces: Sequence[str] | None = None,
        context: AskContext = AskContext(),
        on_delta: DeltaCallback | None = None,
    ) -> Answer:
        started = time.monotonic()
        text, truncated = prepare_question(question)
        standalone = await self.standalone(text, history)
        hits = await self.retrieve(standalone, spaces=spaces)
        best = top_similarity(hits)
        note: str | None = None
        mode = self.mode
        sources: list[Source]
        if not has_enough_evidence(standalone, hits, self._evidence):
            answer_text, sources, refused = prompts.REFUSAL, [], True
        elif self._chat is not None:
            try:
                answer_text = await self._generate(standalone, hits, on_delta)
                mode = "llm"
            except ChatModelError as error:
                logger.warning("chat model failed, answering extractively: %s", error)
                note = f"Quoting the pages instead: {error}."
                answer_text, mode = extractive_answer(standalone, hits), "extractive"
            refused = prompts.is_refusal(answer_text)
            answer_text, sources = (prompts.REFUSAL, []) if refused else cite(answer_text, hits)
        else:
            answer_text = extractive_answer(standalone, hits)
            refused = not answer_text
            answer_text, sources = (prompts.REFUSAL, []) if refused else cite(answer_text, hits)
        result = Answer(
            question=text, standalone_question=standalone, text=answer_text, sources=sources, refused=refused,
            latency_ms=int((time.monotonic() - started) * 1000), top_score=best,
            closest=distinct_pages(hits) if refused else [], chunks_used=len(hits), mode=mode,
            truncated=truncated, note=note,
        )
        query_id = await self._log(result, context)
        if self._metrics is not None:  # every surface: Slack, API, CLI
            self._metrics.observe("askdocs_question_seconds", time.monotonic() - started,
                                  help="Time to answer a question")
            self._metrics.inc("askdocs_questions_total", help="Questions answered, by surface and outcome",
                              surface=context.surface, outcome="refused" if refused else "answered")
        return Answer(**{**result.__dict__, "query_id": query_id})

    async def _generate(self, question: str, hits: Sequence[SearchHit], on_delta: DeltaCallback | None) -> str:
        assert self._chat is not None
        parts: list[str] = []
        async for delta in self._chat.stream(prompts.build_answer_messages(question, hits)):
            parts.append(delta)
            if on_delta is not None:
                await on_delta("".join(parts))
        return "".join(parts)

    async def _log(self, answer: Answer, context: AskContext) -> int | None:
        entry = QueryLogEntry(
            surface=context.surface, question=answer.question, answer=answer.text, refused=answer.refused,
            sources=[s.to_json() for s in answer.sources or answer.closest],
            standalone_question=answer.standalone_question, top_score=answer.top_score,
            latency_ms=answer.latency_ms, user_id=context.user_id, channel_id=context.channel_id,
            thread_ts=context.thread_ts,
        )
        try:
            async with self._pool.acquire() as conn:
                return await activity.log_query(conn, entry)
        except (OSError, asyncpg.PostgresError) as error:
            # The user still gets the answer; losing one log line beats losing the reply.
            logger.warning("could not log the question: %s", error)
            return None
