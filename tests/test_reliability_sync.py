"""Faults during a sync: whatever Confluence, the embedding API or the database does, the knowledge base holds
only whole pages, deletes nothing on a broken listing, reports every page it couldn't index, and the next clean
sync converges to exactly what Confluence has.

Every fault is injected through the emulators or the real (embedded) Postgres server. The invariant check is
strong on purpose: each page row must hold exactly the chunks, checksum and vectors that a fresh conversion of
the body Confluence served *at that row's version* produces — a page half-written, written against the wrong
body, or with another page's vectors fails it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import numpy as np
import psutil
import pytest

from bot.operations.sync_runner import RunOutcome, StartedRun, SyncRunner
from bot.services import Services, build_services
from bot.settings import Settings
from db.embedded import EmbeddedPostgres
from ingest.chunker import chunk_sections
from ingest.confluence import ConfluenceClient, RetryPolicy
from ingest.embedders.openai import OpenAIEmbedder
from ingest.models import Chunk, Page
from ingest.storage_format import content_checksum, to_sections
from ingest.sync import SyncOptions, page_checksum
from ingest.tokens import CharacterBoundTokenizer
from tests.conftest import EMULATOR_EMBEDDING_MODEL
from tests.emulators.confluence import ConfluenceEmulator, EmulatedPage
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.openai import embed_text as emulator_vector
from tests.wiki import add_team_pages

MakeSettings = Callable[..., Settings]
# Tiny waits so retries cost milliseconds; Retry-After is clamped far below what the emulator sends.
ATTEMPTS = 4
FAST = RetryPolicy(attempts=ATTEMPTS, base_delay_s=0.01, max_delay_s=0.05, max_retry_after_s=0.05)
CONFLUENCE_EMAIL, CONFLUENCE_TOKEN = "bot@example.com", "confluence-secret-token"  # as in conftest


# ---- what Confluence served, and what the knowledge base must therefore hold -----------------------------


@dataclass(frozen=True)
class Served:
    """A page as Confluence showed it at one version."""

    title: str
    body: str
    ancestors: tuple[str, ...]


@dataclass(frozen=True)
class Expected:
    checksum: str
    chunks: list[Chunk]
    has_text: bool


def _ancestors(confluence: ConfluenceEmulator, page: EmulatedPage) -> tuple[str, ...]:
    chain: list[str] = []
    parent = confluence.pages.get(page.parent_id or "")
    while parent is not None:
        chain.insert(0, parent.title)
        parent = confluence.pages.get(parent.parent_id or "")
    return tuple(chain)


@dataclass
class Wiki:
    """Drives syncs and remembers every (page, version) Confluence could have served."""

    confluence: ConfluenceEmulator
    services: Services
    served: dict[tuple[str, int], Served] = field(default_factory=dict)

    def remember(self) -> None:
        for page in self.confluence.pages.values():
            self.served[(page.page_id, page.version)] = Served(
                page.title, page.body, _ancestors(self.confluence, page)
            )

    async def sync(self, runner: SyncRunner | None = None, **kwargs: object) -> RunOutcome:
        self.remember()
        self.confluence.reset_records()
        outcome = await (runner or self.services.sync).run(
            spaces=["ENG"], trigger="cli", requested_by="test", **kwargs
        )
        assert isinstance(outcome, RunOutcome)
        return outcome

    def expected(self, page_id: str, version: int) -> Expected:
        """What index_page must have written for this version: the pure steps, run afresh."""
        served = self.served[(page_id, version)]
        page = Page(page_id=page_id, space_key="ENG", title=served.title, version=version, url="",
                    body=served.body, ancestors=served.ancestors)
        sections = to_sections(page.body, title=page.title)
        embedder = self.services.embedder
        chunks = chunk_sections(
            sections, title=page.title, breadcrumb=page.breadcrumb,
            tokenizer=CharacterBoundTokenizer(embedder.tokenizer), max_tokens=embedder.max_input_tokens,
            overlap_tokens=SyncOptions().overlap_tokens,
        )
        has_text = any(s.text.strip() for s in sections)
        return Expected(page_checksum(page, content_checksum(sections)), chunks, has_text)

    async def rows(self) -> dict[str, int]:
        async with self.services.database.pool.acquire() as conn:
            rows = await conn.fetch("SELECT page_id, version FROM pages WHERE space_key = 'ENG'")
        return {r["page_id"]: r["version"] for r in rows}

    def current(self) -> dict[str, int]:
        return {p.page_id: p.version for p in self.confluence.pages.values()
                if p.space_key == "ENG" and p.status == "current"}

    async def stale(self) -> set[str]:
        """Pages Confluence lists whose indexed version is missing or older."""
        rows = await self.rows()
        return {p for p, v in self.current().items() if rows.get(p) != v}

    async def assert_whole(self) -> None:
        """No page half-written: each row's checksum, chunks and vectors are those of one served version."""
        async with self.services.database.pool.acquire() as conn:
            pages = await conn.fetch("SELECT page_id, version, checksum, status FROM pages")
            chunks = await conn.fetch(
                "SELECT page_id, chunk_index, content, content_hash, token_count, embedding"
                "  FROM chunks ORDER BY page_id, chunk_index"
            )
        by_page: dict[str, list[asyncpg.Record]] = {}
        for c in chunks:
            by_page.setdefault(c["page_id"], []).append(c)
        dimension = self.services.embedder.dimension
        for row in pages:
            page_id, version = row["page_id"], row["version"]
            assert (page_id, version) in self.served, f"page {page_id} v{version} was never served"
            want = self.expected(page_id, version)
            got = by_page.get(page_id, [])
            assert row["status"] == "current" and row["checksum"] == want.checksum, page_id
            assert [c["chunk_index"] for c in got] == list(range(len(got))), page_id
            assert [(c["content"], c["content_hash"], c["token_count"]) for c in got] == [
                (c.content, c.content_hash, c.token_count) for c in want.chunks
            ], f"page {page_id} v{version} holds other chunks than its body makes"
            assert got or not want.has_text, f"page {page_id} has text but no chunks"
            for stored, chunk in zip(got, want.chunks, strict=True):
                vector = np.asarray(emulator_vector(chunk.embed_text, dimension), dtype=np.float32)
                stored_vector = np.asarray(stored["embedding"].to_list())
                assert np.allclose(stored_vector, vector, atol=1e-5), f"{page_id}#{chunk.index}"

    async def assert_converged(self) -> None:
        assert await self.rows() == self.current()
        await self.assert_whole()

    async def recorded_failures(self, run_id: int) -> set[str]:
        async with self.services.database.pool.acquire() as conn:
            rows = await conn.fetch("SELECT page_id, error FROM sync_failures WHERE run_id = $1", run_id)
        assert all(r["error"] for r in rows)
        return {r["page_id"] for r in rows}

    async def assert_failures_reported(self, outcome: RunOutcome) -> set[str]:
        """After a run whose listing completed: the pages left behind are exactly the ones reported failed."""
        failed = {f.page_id for f in outcome.report.failures}
        assert failed == await self.stale()
        assert failed == await self.recorded_failures(outcome.run_id)
        assert outcome.report.pages_failed == len(failed)
        assert outcome.status == ("partial" if failed else "succeeded")
        return failed

    async def heal(self, expect_refetched: set[str]) -> RunOutcome:
        """A clean sync: every page left behind is fetched again and the index converges."""
        self.confluence.clear_faults()
        healed = await self.sync()
        assert healed.status == "succeeded", healed.report.failures
        assert healed.report.bodies_fetched == len(expect_refetched)
        assert {p for p in expect_refetched if body_requests(self.confluence, p)} == expect_refetched
        await self.assert_converged()
        return healed


@dataclass(frozen=True)
class Churn:
    edited: list[str]
    added: list[str]
    deleted: list[str]

    @property
    def fetched(self) -> set[str]:
        return {*self.edited, *self.added}


def churn(confluence: ConfluenceEmulator, ids: list[str]) -> Churn:
    """Typical day-to-day edits: appended paragraphs, a renamed page, new pages, two deletions."""
    edited = ids[1:17:2]
    for n, page_id in enumerate(edited):
        page = confluence.pages[page_id]
        confluence.edit_page(page_id, body=page.body + f"<p>Update {n}: the on-call rota changed in May.</p>")
    confluence.edit_page(edited[0], title=confluence.pages[edited[0]].title + " (renamed)")
    added = [confluence.add_page("ENG", f"New page {n}", f"<h2>Intro</h2><p>Fresh page number {n}.</p>")
             for n in range(3)]
    deleted = [ids[2], ids[4]]
    for page_id in deleted:
        confluence.delete_page(page_id)
    return Churn(edited, added, deleted)


def requests_with(confluence: ConfluenceEmulator, text: str) -> int:
    """Requests whose path or query string holds `text`."""
    return sum(1 for _, path, query in confluence.requests if text in f"{path}?{query}")


def body_requests(confluence: ConfluenceEmulator, page_id: str) -> int:
    return sum(1 for _, path, _ in confluence.requests if path.endswith(f"/api/v2/pages/{page_id}"))


def body_path(page_id: str) -> str:
    """Matches the body request of exactly this page (`?` ends the id)."""
    return f"/pages/{page_id}?"  # the v2 body fetch (issue 14), not ancestors or restrictions


def client_factory(confluence: ConfluenceEmulator, **kwargs: object) -> Callable[[], ConfluenceClient]:
    def build() -> ConfluenceClient:
        assert confluence.base_url is not None
        options: dict[str, object] = {"retry": FAST, **kwargs}
        return ConfluenceClient(confluence.base_url, email=CONFLUENCE_EMAIL, api_token=CONFLUENCE_TOKEN,
                                **options)  # type: ignore[arg-type]

    return build


def fast_runner(services: Services, confluence: ConfluenceEmulator, **client: object) -> SyncRunner:
    return SyncRunner(
        pool=services.database.pool, embedder=services.embedder,
        source_factory=client_factory(confluence, **client), default_spaces=["ENG"],
        options=SyncOptions(concurrency=4),
    )


@pytest.fixture
async def synced_wiki(confluence: ConfluenceEmulator, services: Services) -> tuple[Wiki, list[str]]:
    """24 pages synced once, cleanly."""
    ids = add_team_pages(confluence, "ENG", 24)
    wiki = Wiki(confluence, services)
    first = await wiki.sync()
    assert first.status == "succeeded" and first.report.pages_added == 24
    await wiki.assert_converged()
    return wiki, ids


# ---- Confluence faults -----------------------------------------------------------------------------------


async def test_a_429_storm_is_ridden_out_and_exhausted_pages_are_retried_next_run(
    synced_wiki: tuple[Wiki, list[str]], services: Services
) -> None:
    wiki, ids = synced_wiki
    confluence = wiki.confluence
    changes = churn(confluence, ids)
    doomed = changes.edited[1:3]
    for page_id in doomed:  # rate-limited on every attempt: these two must fail and say so
        confluence.fail_next(ATTEMPTS, status=429, retry_after=1, path_contains=body_path(page_id))
    survivors = sorted(changes.fetched - set(doomed))
    for page_id in survivors:  # rate-limited on all but the last attempt
        confluence.fail_next(ATTEMPTS - 1, status=429, retry_after=1, path_contains=body_path(page_id))
    # Some servers answer 403 + Retry-After under load; a long Retry-After is clamped (an absurd one is a
    # "blocked" error: test_rate_limit.py).
    confluence.fail_next(1, status=403, retry_after=2, path_contains="/api/v2/spaces?")
    confluence.fail_next(ATTEMPTS - 1, status=429, retry_after="200", path_contains="/pages?")

    started = time.monotonic()
    outcome = await wiki.sync(fast_runner(services, confluence))
    assert time.monotonic() - started < 15  # Retry-After was honoured but clamped, not slept for real

    assert await wiki.assert_failures_reported(outcome) == set(doomed)
    assert all("429" in f.error for f in outcome.report.failures)
    # Every 429 was retried, and nothing more: survivors took ATTEMPTS requests, the doomed ones too.
    assert confluence.count("/api/v2/pages/") == ATTEMPTS * len(changes.fetched)
    assert outcome.report.pages_deleted == len(changes.deleted)
    await wiki.assert_whole()
    await wiki.heal(set(doomed))


async def test_5xx_bursts_are_retried_and_a_page_that_keeps_failing_is_reported(
    synced_wiki: tuple[Wiki, list[str]], services: Services
) -> None:
    wiki, ids = synced_wiki
    confluence = wiki.confluence
    changes = churn(confluence, ids)
    broken = changes.edited[3]
    confluence.fail_next(ATTEMPTS, status=500, path_contains=body_path(broken))
    for n, page_id in enumerate(sorted(changes.fetched - {broken})):
        confluence.fail_next(ATTEMPTS - 1, status=(500, 502, 503, 504)[n % 4], path_contains=body_path(page_id))
    confluence.fail_next(ATTEMPTS - 1, status=503, path_contains="/pages?")

    outcome = await wiki.sync(fast_runner(services, confluence))
    assert await wiki.assert_failures_reported(outcome) == {broken}
    assert "500" in outcome.report.failures[0].error
    await wiki.assert_whole()
    await wiki.heal({broken})


async def test_responses_slower_than_the_client_timeout_are_retried_then_reported(
    synced_wiki: tuple[Wiki, list[str]], services: Services
) -> None:
    wiki, ids = synced_wiki
    confluence = wiki.confluence
    changes = churn(confluence, ids)
    hung = changes.edited[2]
    confluence.slow_next(2.0, n=ATTEMPTS, path_contains=body_path(hung))  # never answers in time
    confluence.slow_next(2.0, n=1, path_contains=body_path(changes.added[0]))  # once
    confluence.slow_next(2.0, n=1, path_contains="/pages?")  # the listing, once

    outcome = await wiki.sync(fast_runner(services, confluence, timeout_s=0.5))
    assert await wiki.assert_failures_reported(outcome) == {hung}
    assert "timed out" in outcome.report.failures[0].error
    await wiki.assert_whole()
    await wiki.heal({hung})


async def test_a_connection_reset_mid_listing_deletes_nothing_then_a_retry_survives_it(
    synced_wiki: tuple[Wiki, list[str]], services: Services
) -> None:
    wiki, ids = synced_wiki
    confluence = wiki.confluence
    changes = churn(confluence, ids)
    before = await wiki.rows()
    small_pages = {"page_size": 10}  # 25 pages: the listing takes 3 requests, the 2nd and 3rd carry a cursor

    # The connection drops halfway through the second listing page on every attempt.
    confluence.reset_next(ATTEMPTS, path_contains="cursor=")
    failed = await wiki.sync(fast_runner(services, confluence, **small_pages))
    assert failed.status == "failed" and "nothing deleted" in failed.failed_spaces["ENG"]
    assert requests_with(confluence, "cursor=") == ATTEMPTS
    assert await wiki.rows() == before  # the deleted pages are still there, nothing fetched or changed
    assert failed.report.bodies_fetched == 0 and await wiki.recorded_failures(failed.run_id) == set()
    await wiki.assert_whole()

    # Once only: the retry completes the listing and the run goes through.
    confluence.reset_next(1, path_contains="cursor=")
    survived = await wiki.sync(fast_runner(services, confluence, **small_pages))
    assert survived.status == "succeeded" and survived.report.pages_deleted == len(changes.deleted)
    await wiki.assert_failures_reported(survived)
    await wiki.assert_converged()
    await wiki.heal(set())


async def test_truncated_json_on_a_listing_page_and_on_a_body(
    synced_wiki: tuple[Wiki, list[str]], services: Services
) -> None:
    wiki, ids = synced_wiki
    confluence = wiki.confluence
    changes = churn(confluence, ids)
    before = await wiki.rows()
    small_pages = {"page_size": 10}

    confluence.truncate_next(ATTEMPTS, path_contains="cursor=")
    failed = await wiki.sync(fast_runner(services, confluence, **small_pages))
    assert failed.status == "failed" and "not valid JSON" in failed.failed_spaces["ENG"]
    assert await wiki.rows() == before
    await wiki.assert_whole()

    cut_short = changes.edited[4]
    confluence.truncate_next(ATTEMPTS, path_contains=body_path(cut_short))
    confluence.truncate_next(1, path_contains="cursor=")
    confluence.truncate_next(1, path_contains=body_path(changes.added[1]))
    partial = await wiki.sync(fast_runner(services, confluence, **small_pages))
    assert await wiki.assert_failures_reported(partial) == {cut_short}
    assert "not valid JSON" in partial.report.failures[0].error
    await wiki.assert_whole()
    await wiki.heal({cut_short})


# ---- the embedding API failing ---------------------------------------------------------------------------


async def test_an_embedding_batch_failing_for_good_fails_only_its_page(
    confluence: ConfluenceEmulator, openai_emulator: OpenAIEmulator, make_settings: MakeSettings
) -> None:
    embedder = OpenAIEmbedder(
        api_key="sk-test-secret-key", base_url=openai_emulator.base_url, model=EMULATOR_EMBEDDING_MODEL,
        max_retries=2, retry_base_delay_s=0.01,
    )
    # One page at a time, so the injected failures all land on one page's request and its retry.
    async with build_services(make_settings(confluence_max_concurrency=1), embedder=embedder) as services:
        ids = add_team_pages(confluence, "ENG", 12)
        wiki = Wiki(confluence, services)
        assert (await wiki.sync()).status == "succeeded"
        edited = ids[3:8]
        for page_id in edited:
            confluence.edit_page(page_id, body=confluence.pages[page_id].body + "<p>Laptops renew yearly.</p>")
        openai_emulator.fail_next("embeddings", status=500, n=2)

        outcome = await wiki.sync()
        [failure] = outcome.report.failures
        assert failure.page_id == edited[0]
        assert "unavailable" in failure.error and "HTTP 500" in failure.error and "2 times" in failure.error
        assert await wiki.assert_failures_reported(outcome) == {edited[0]}
        assert outcome.report.pages_updated == len(edited) - 1
        await wiki.assert_whole()  # the failed page still holds its previous version, whole
        await wiki.heal({edited[0]})


# ---- the database restarting under a sync ----------------------------------------------------------------


@dataclass
class OwnPostgres:
    """An embedded server of the test's own (the shared one must survive), to kill and start again."""

    data_dir: Path
    server: EmbeddedPostgres | None = None

    async def start(self) -> str:
        self.server = EmbeddedPostgres(self.data_dir)
        return await self.server.start()

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash: no shutdown checkpoint) and wait until its backends are gone."""
        assert self.server is not None
        pid = int((self.server.pgdata / "postmaster.pid").read_text().split()[0])
        postmaster = psutil.Process(pid)
        backends = postmaster.children()
        os.kill(pid, signal.SIGKILL)
        _, alive = psutil.wait_procs([postmaster, *backends], timeout=15)
        assert not alive, f"postgres processes survived the kill: {alive}"

    async def restart(self) -> str:
        await self.stop()  # forget the dead server's handle, or pgserver would hand it out again
        return await self.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None


@pytest.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[tuple[OwnPostgres, str]]:
    own = OwnPostgres(tmp_path / "own-pg")
    dsn = await own.start()
    yield own, dsn
    await own.stop()


def pages_still_syncing() -> list[asyncio.Task[object]]:
    """Tasks of a sync engine's page loop that are still alive."""
    return [t for t in asyncio.all_tasks()
            if not t.done() and "sync_space" in getattr(t.get_coro(), "__qualname__", "")]


async def wait_until(condition: Callable[[], bool], *, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_database_killed_mid_sync_leaves_whole_pages_and_the_next_sync_converges(
    confluence: ConfluenceEmulator, make_settings: MakeSettings, own_postgres: tuple[OwnPostgres, str]
) -> None:
    server, dsn = own_postgres
    settings = make_settings(database_url=dsn)
    ids = add_team_pages(confluence, "ENG", 100)
    confluence.slow_next(0.03, n=len(ids), path_contains="/api/v2/pages/")  # so the kill lands mid-sync

    async with build_services(settings) as services:
        wiki = Wiki(confluence, services)
        wiki.remember()
        started = await services.sync.start(spaces=["ENG"], trigger="cli", requested_by="test")
        assert isinstance(started, StartedRun)
        await wait_until(lambda: confluence.bodies_served >= 30)
        server.kill()
        try:
            outcome: RunOutcome | BaseException = await asyncio.wait_for(started.wait(), 20)
        except (OSError, asyncpg.PostgresConnectionError) as error:
            outcome = error  # the run could not even record its end: the next run closes its row
        # The run is over, so no page of it may still be on its way (it would be written without the lock).
        await wait_until(lambda: confluence.in_flight == 0)
        assert pages_still_syncing() == []
        asked = confluence.count("/api/v2/pages/")
        assert asked < len(ids)
        if isinstance(outcome, RunOutcome):
            assert outcome.status == "failed"
        interrupted_run = started.run_id

    assert await server.restart() == dsn
    confluence.clear_faults()

    async with build_services(settings) as services:
        wiki.services = services
        rows = await wiki.rows()
        assert 0 < len(rows) < len(ids), "the kill should have landed mid-sync"
        await wiki.assert_whole()  # crash recovery kept whole pages only

        healed = await wiki.sync()
        assert healed.status == "succeeded"
        assert healed.report.bodies_fetched == len(ids) - len(rows)
        await wiki.assert_converged()
        async with services.database.pool.acquire() as conn:
            run = await conn.fetchrow("SELECT status, error, finished_at FROM sync_runs WHERE id = $1",
                                      interrupted_run)
        assert run["status"] == "failed" and run["finished_at"] is not None
        assert run["error"]  # 'interrupted: …' when the dying run could not close its own row


async def test_a_sync_that_loses_its_database_ends_as_a_failed_run(
    confluence: ConfluenceEmulator, make_settings: MakeSettings, own_postgres: tuple[OwnPostgres, str]
) -> None:
    server, dsn = own_postgres
    add_team_pages(confluence, "ENG", 12)
    confluence.slow_next(0.05, n=12, path_contains="/api/v2/pages/")
    async with build_services(make_settings(database_url=dsn)) as services:
        started = await services.sync.start(spaces=["ENG"], trigger="cli", requested_by="test")
        assert isinstance(started, StartedRun)
        await wait_until(lambda: confluence.bodies_served >= 3)
        server.kill()
        outcome = await asyncio.wait_for(started.wait(), 20)
        assert outcome.status == "failed" and outcome.error
