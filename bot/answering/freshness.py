"""Answer-time freshness: are the cited pages still the versions we indexed?

One batched call to Confluence per answer (short timeout, results cached for a few minutes). A cited page
that changed is re-indexed in the background and the answer says so; a page that vanished leaves the index
and the answer. If Confluence is unreachable the answer goes out unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from bot.answering.citations import cited_numbers, remap_citations
from bot.answering.models import Answer, Source
from ingest.errors import ConfluenceError, PageForbidden
from ingest.sync import SourceFactory

logger = logging.getLogger(__name__)


class PageIndex(Protocol):
    """What freshness needs of the sync side (bot.operations.SyncRunner): re-index pages, or drop them."""

    async def refresh_pages(self, page_ids: Sequence[str]) -> list[str]: ...

    async def forget_pages(self, page_ids: Sequence[str]) -> int: ...


@dataclass(frozen=True)
class FreshnessReport:
    stale: list[Source] = field(default_factory=list)  # changed in Confluence since indexed
    vanished: list[Source] = field(default_factory=list)  # deleted, archived or no longer visible
    checked: bool = True  # False when Confluence could not be asked in time


@dataclass
class Reviewed:
    answer: Answer
    report: FreshnessReport
    refresh: asyncio.Task[list[str]] | None = None  # re-indexing of stale pages, when any


def drop_sources(answer: Answer, gone: set[str]) -> Answer:
    """The answer without the given pages: their citations removed, the rest renumbered."""
    keep = [s for s in answer.sources if s.page_id not in gone]
    if len(keep) == len(answer.sources):
        return answer
    mapping = {s.n: new for new, s in enumerate(keep, start=1)}
    text = remap_citations(answer.text, mapping)
    sources = [replace(s, n=new) for new, s in enumerate(keep, start=1)]
    if not sources or not cited_numbers(text):
        return replace(answer, sources=sources, text=text if sources else answer.text,
                       note="A page this answer relied on was deleted from Confluence.")
    return replace(answer, sources=sources, text=text)


def freshness_note(report: FreshnessReport) -> str | None:
    if not report.stale:
        return None
    numbers = ", ".join(f"[{s.n}] {s.title}" for s in report.stale)
    return f"Updated in Confluence since it was indexed: {numbers}. Refreshing it now."


class FreshnessChecker:
    def __init__(
        self,
        *,
        source_factory: SourceFactory,
        runner: PageIndex,
        cache_ttl_s: float = 300.0,
        timeout_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source_factory = source_factory
        self._runner = runner
        self._ttl = cache_ttl_s
        self._timeout = timeout_s
        self._clock = clock
        self._cache: dict[str, tuple[float, int | None]] = {}
        self._refreshing: dict[str, asyncio.Task[list[str]]] = {}  # one refresh per page at a time

    async def current_versions(self, page_ids: Sequence[str]) -> dict[str, int | None] | None:
        """Versions from the cache or one batched request; None when Confluence can't be asked in time."""
        now = self._clock()
        known = {p: v for p, (at, v) in self._cache.items() if p in page_ids and now - at < self._ttl}
        missing = [p for p in page_ids if p not in known]
        if missing:
            try:
                async with asyncio.timeout(self._timeout), self._source_factory() as source:
                    fetched = await source.current_versions(list(missing))
            except Exception as error:  # a slow or absent Confluence never holds up an answer
                logger.info("freshness check skipped: %s", error)
                return None
            for page_id, version in fetched.items():
                self._cache[page_id] = (now, version)
                known[page_id] = version
        return known

    async def confirm_gone(self, page_ids: Sequence[str]) -> set[str]:
        """Of pages missing from a version check, those Confluence says are gone (404/403 on the page itself).

        A search index being rebuilt (Data Center) can leave pages out of a batched answer: one missing id is
        never enough to delete a page from the knowledge base.
        """
        gone: set[str] = set()
        try:
            async with asyncio.timeout(self._timeout), self._source_factory() as source:
                for page_id in page_ids:
                    try:
                        await source.fetch_page(page_id)
                    except PageForbidden:
                        gone.add(page_id)
                    except ConfluenceError as error:
                        if error.status == 404:
                            gone.add(page_id)
        except Exception as error:
            logger.info("could not confirm vanished pages: %s", error)
        return gone

    async def aclose(self) -> None:
        """Cancel refreshes in flight (shutdown)."""
        tasks = list(self._refreshing.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _refresh(self, page_ids: list[str]) -> asyncio.Task[list[str]]:
        """One background refresh for these pages, joining a refresh already running for all of them."""
        running = {self._refreshing[p] for p in page_ids if p in self._refreshing}
        if len(running) == 1 and all(p in self._refreshing for p in page_ids):
            return running.pop()
        task = asyncio.create_task(self._runner.refresh_pages(page_ids))
        for page_id in page_ids:
            self._refreshing[page_id] = task

        def forget(done: asyncio.Task[list[str]]) -> None:
            for page_id in page_ids:
                if self._refreshing.get(page_id) is done:
                    del self._refreshing[page_id]

        task.add_done_callback(forget)
        return task

    async def fresh_answer(
        self, answer: Answer, ask_again: Callable[[], Awaitable[Answer]], *, wait_s: float = 30.0
    ) -> Answer:
        """For callers that answer once (CLI, API): a stale citation is re-indexed, then the question asked
        again; if that takes longer than `wait_s`, the flagged answer goes out as it is."""
        try:
            reviewed = await self.review(answer)
        except Exception as error:  # the answer still goes out, unreviewed
            logger.warning("freshness check failed: %s", error)
            return answer
        if reviewed.refresh is None:
            return reviewed.answer
        try:
            await asyncio.wait_for(asyncio.shield(reviewed.refresh), wait_s)
        except TimeoutError:
            return reviewed.answer
        return await ask_again()

    async def review(self, answer: Answer) -> Reviewed:
        if not answer.sources:
            return Reviewed(answer, FreshnessReport())
        versions = await self.current_versions([s.page_id for s in answer.sources])
        if versions is None:
            return Reviewed(answer, FreshnessReport(checked=False))
        missing = [s.page_id for s in answer.sources if s.page_id in versions and versions[s.page_id] is None]
        gone = await self.confirm_gone(missing) if missing else set()
        vanished = [s for s in answer.sources if s.page_id in gone]
        stale = [
            s for s in answer.sources
            if versions.get(s.page_id) is not None and s.version and versions[s.page_id] != s.version
        ]
        if vanished:
            await self._runner.forget_pages([s.page_id for s in vanished])
            answer = drop_sources(answer, {s.page_id for s in vanished})
        stale = [s for s in answer.sources if s.page_id in {x.page_id for x in stale}]
        report = FreshnessReport(stale=stale, vanished=vanished)
        refresh = None
        if stale:
            for s in stale:
                self._cache.pop(s.page_id, None)
            refresh = self._refresh([s.page_id for s in stale])
            answer = replace(answer, note=freshness_note(report))
        return Reviewed(answer, report, refresh)
