"""The answer engine shared by Slack, the CLI and the HTTP API.

embed → hybrid search → rank → enough evidence? → prompt → model (or extractive) → keep cited sources → log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import asyncpg

from bot.answering import prompts
from bot.answering.chat import ChatModel, ChatModelError
from bot.answering.citations import cite, cited_numbers, distinct_pages
from bot.answering.evidence import (
    EvidencePolicy,
    has_enough_evidence,
    question_subjects,
    top_similarity,
    unknown_subjects,
)
from bot.answering.extractive import extractive_answer
from bot.answering.models import MAX_QUESTION_CHARS, Answer, AskContext, QuestionError, Source, Turn
from bot.answering.ranking import RankingPolicy, keyword_query, rank
from db import activity, search
from db.activity import QueryLogEntry
from db.models import Audience, SearchHit
from ingest.embedders import Embedder

logger = logging.getLogger(__name__)

DeltaCallback = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Retrieved:
    hits: list[SearchHit]
    unknown_subjects: list[str]  # named in the question, (almost) absent from the knowledge base


class AnswerObserver(Protocol):
    """Told about every answer, whatever the surface (metrics)."""

    def question_answered(self, *, surface: str, refused: bool, seconds: float) -> None: ...


def prepare_question(question: str, *, max_chars: int = MAX_QUESTION_CHARS) -> tuple[str, bool]:
    """Strip, refuse empty, cut very long questions (the caller tells the user it was cut)."""
    text = " ".join(question.split())
    if not text:
        raise QuestionError("Please ask a question, e.g. `@askdocs how do I request VPN access?`")
    if len(text) > max_chars:
        return text[:max_chars].rsplit(" ", 1)[0], True
    return text, False


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
        observer: AnswerObserver | None = None,
        rewrite_queries: bool = False,
    ) -> None:
        self._pool = pool
        self._embedder = embedder
        self._chat = chat
        self._ranking = ranking
        self._evidence = evidence
        self._candidates_per_leg = candidates_per_leg
        self._observer = observer
        self._rewrite_queries = rewrite_queries and chat is not None

    @property
    def mode(self) -> str:
        return "llm" if self._chat is not None else "extractive"

    async def retrieve(
        self, question: str, *, spaces: Sequence[str] | None = None, audience: Audience | None = None,
        search_text: str | None = None,
    ) -> Retrieved:
        """Ranked hits, and the question's subjects the knowledge base doesn't know (one round trip each).

        `audience` (per-user permissions, issue 15): only pages it may read are searched; None: all pages.
        `search_text` (the question plus a model-written passage) replaces the question for both search legs;
        the subject check always reads the question itself, since a model may name products it imagined."""
        query = search_text or question
        [embedding] = await self._embedder.embed([query])
        subjects = question_subjects(question)
        async with self._pool.acquire() as conn:
            candidates = await search.hybrid_candidates(
                conn, embedding, keyword_query(query), spaces=spaces, limit=self._candidates_per_leg,
                audience=audience,
            )
            counts = await search.subject_chunk_counts(conn, [(s.text, s.exact) for s in subjects])
        hits = rank(candidates, policy=self._ranking, now=datetime.now(UTC))
        unknown = unknown_subjects(subjects, counts, hits, max_chunks=self._evidence.rare_subject_max_chunks)
        return Retrieved(hits, unknown)

    async def search_text(self, question: str) -> str | None:
        """With `rewrite_queries`: the question followed by a passage the model writes the way a wiki page
        would answer it, so the vector leg compares page-like text with pages (HyDE). None without a model,
        when the model declines, or when it fails: retrieval then uses the question alone."""
        if not self._rewrite_queries or self._chat is None:
            return None
        try:
            passage = (await self._chat.complete(prompts.build_search_messages(question), max_tokens=120)).strip()
        except ChatModelError as error:
            logger.warning("could not write a search passage with the model: %s", error)
            return None
        if not passage or prompts.is_refusal(passage):
            return None
        return f"{question}\n{passage[:1000]}"

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
        audience: Audience | None = None,
    ) -> Answer:
        started = time.monotonic()
        text, truncated = prepare_question(question)
        standalone = await self.standalone(text, history)
        retrieved = await self.retrieve(standalone, spaces=spaces, audience=audience,
                                        search_text=await self.search_text(standalone))
        hits = retrieved.hits
        best = top_similarity(hits)
        note: str | None = None
        mode = self.mode
        sources: list[Source]
        refused = False
        if not has_enough_evidence(standalone, hits, self._evidence, unknown=retrieved.unknown_subjects):
            answer_text, sources, refused = prompts.REFUSAL, [], True
        elif self._chat is not None:
            try:
                generated = await self._generate(standalone, hits, on_delta)
                answer_text, sources = cite(generated, hits)
                refused = prompts.is_refusal(answer_text, cited=bool(cited_numbers(generated)))
                mode = "llm"
            except ChatModelError as error:
                logger.warning("chat model failed, answering extractively: %s", error)
                note = f"Quoting the pages instead: {error}."
                mode = "extractive"
                extract = extractive_answer(standalone, hits)
                answer_text, sources = (extract.text, extract.sources) if extract else ("", [])
                refused = extract is None
        else:
            extract = extractive_answer(standalone, hits)
            answer_text, sources = (extract.text, extract.sources) if extract else ("", [])
            refused = extract is None
        if refused:
            answer_text, sources = prompts.REFUSAL, []
        result = Answer(
            question=text, standalone_question=standalone, text=answer_text, sources=sources, refused=refused,
            latency_ms=int((time.monotonic() - started) * 1000), top_score=best,
            closest=distinct_pages(hits) if refused else [], chunks_used=len(hits), mode=mode,
            truncated=truncated, note=note,
        )
        query_id = await self._log(result, context)
        if self._observer is not None:  # every surface: Slack, API, CLI
            self._observer.question_answered(surface=context.surface, refused=refused,
                                             seconds=time.monotonic() - started)
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
