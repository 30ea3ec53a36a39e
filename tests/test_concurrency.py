"""Several things at once on one database: scheduler and /docsync, two `askdocs run` processes, questions
during a sync. The real service graph, the real SlackBot over Socket Mode, subprocesses, the emulators.

A sync is kept in flight by slowing every body fetch a little (`slow_next` on `/rest/api/content/`) and
released with `clear_faults()` once the test has seen what it came for: no fixed sleeps.

`SlackStack`/`slack_stack` and the Slack helpers here are shared with test_answer_faults and test_injection.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg
import pytest

from bot.operations.sync_runner import AlreadyRunning, StartedRun
from bot.services import Services, build_services
from bot.settings import load_settings
from bot.slack.app import SlackBot
from bot.slack.budget import RateBudget
from db.embedded import EmbeddedPostgres
from ingest.embedders.openai import OpenAIEmbedder
from tests.conftest import EMULATOR_EMBEDDING_MODEL, FAST_RETRY, TEMPLATE_DB
from tests.emulators.confluence import ConfluenceEmulator
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import SlackEmulator
from tests.test_runtime import CONFLUENCE_TOKEN, LISTENING, OPENAI_KEY, askdocs_run, child_env
from tests.test_scheduler import daily_scheduler
from tests.wiki import add_samples, add_team_pages

Json = dict[str, Any]
T = TypeVar("T")
VPN_QUESTION = "how do I connect my laptop to the corporate VPN?"
BODY_FETCH = "/api/v2/pages/"  # ConfluenceClient.fetch_page (v2 bodies); listings are /spaces/…/pages
ALREADY_RUNNING = re.compile(
    r"A sync is already running: #(\d+), started \d{4}-\d\d-\d\d \d\d:\d\d UTC by (\S+) for ENG\.")
_databases = itertools.count(1)


# ---- a full Slack stack (shared with the other fault and safety files) ----------------------------------


@dataclass
class SlackStack:
    services: Services
    slack: SlackEmulator
    confluence: ConfluenceEmulator
    openai: OpenAIEmulator
    dsn: str
    admin_dsn: str
    database: str


async def fresh_database(pg_server: EmbeddedPostgres, prefix: str) -> tuple[str, str]:
    """(dsn, name) of a new database cloned from the migrated template."""
    name = f"{prefix}_{os.getpid()}_{next(_databases)}"
    admin_dsn = pg_server.admin_dsn()
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    finally:
        await admin.close()
    base, _, query = admin_dsn.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}?{query}", name


def fast_embedder(openai: OpenAIEmulator, *, attempts: int = 3) -> OpenAIEmbedder:
    """The production embedder with its retry waits shrunk to milliseconds (same attempts logic)."""
    return OpenAIEmbedder(api_key=openai.api_key, base_url=openai.base_url, model=EMULATOR_EMBEDDING_MODEL,
                          max_retries=attempts, retry_base_delay_s=0.01, retry_max_delay_s=0.05)


@asynccontextmanager
async def slack_stack(
    pg_server: EmbeddedPostgres, data_dir: Path, *, llm: bool = False, embedding_attempts: int = 3,
    setup: Callable[[ConfluenceEmulator], object] | None = None, slack_options: dict[str, Any] | None = None,
    budget: RateBudget | None = None,
) -> AsyncIterator[SlackStack]:
    """Emulators, a fresh database, build_services (LLM on or off) and a connected SlackBot.

    `setup` fills the Confluence emulator before anything else starts; `slack_options` go to the
    SlackEmulator (rate limits, window, streaming), `budget` to the bot.
    """
    dsn, name = await fresh_database(pg_server, "stack")
    async with AsyncExitStack() as stack:
        confluence = await stack.enter_async_context(
            ConfluenceEmulator(email="bot@example.com", api_token=CONFLUENCE_TOKEN))
        openai = await stack.enter_async_context(OpenAIEmulator(api_key=OPENAI_KEY, embedding_dimension=384))
        slack = await stack.enter_async_context(SlackEmulator(**(slack_options or {})))
        slack.add_user("UADMIN", name="admin")
        if setup is not None:
            setup(confluence)
        settings = load_settings(
            None, database_url=dsn, askdocs_data_dir=data_dir, confluence_base_url=confluence.base_url,
            confluence_email="bot@example.com", confluence_api_token=CONFLUENCE_TOKEN,
            confluence_spaces=["ENG"], openai_api_key=OPENAI_KEY, openai_base_url=openai.base_url,
            embedding_provider="openai", embedding_model=EMULATOR_EMBEDDING_MODEL,
            llm_provider="openai" if llm else "none", slack_bot_token=slack.bot_token,
            slack_app_token=slack.app_token, slack_api_url=slack.base_url, slack_admin_users=["UADMIN"],
        )
        services = await stack.enter_async_context(build_services(
            settings, embedder=fast_embedder(openai, attempts=embedding_attempts), confluence_retry=FAST_RETRY))
        bot = SlackBot(services, budget=budget)
        await bot.start()
        stack.push_async_callback(bot.stop)
        yield SlackStack(services, slack, confluence, openai, dsn, pg_server.admin_dsn(), name)


# ---- Slack helpers ----------------------------------------------------------------------------------------


def is_answer(params: Json) -> bool:
    return any(str(b.get("block_id", "")).startswith("askdocs_answer") for b in params.get("blocks") or [])


def bot_replies(slack: SlackEmulator, channel: str, thread_ts: str) -> list[Json]:
    return [m for m in slack.messages_in_thread(channel, thread_ts)
            if m.get("bot_id") == slack.bot_id and m["ts"] != thread_ts]


def context_texts(params: Json) -> list[str]:
    return [e["text"] for b in params.get("blocks") or [] if b["type"] == "context" for e in b["elements"]]


def in_progress(message: Json) -> bool:
    """A placeholder or an answer still being written (streamed, or edited in place where Slack can't), or
    a stopped stream whose final text is about to replace it (no blocks yet)."""
    shown = json.dumps(message.get("blocks") or [])
    return not message.get("blocks") or "Searching Confluence" in shown or "Writing the answer" in shown


async def final_message(
    slack: SlackEmulator, channel: str, thread_ts: str, *, since: int = 0,
    timeout: float = 15, answer: bool = True,  # noqa: ASYNC109
) -> Json:
    """The bot's finished reply in this thread as the user sees it (stream stopped, last edit applied): an
    answer, or with answer=False anything final (an apology, a problem)."""
    def matches(message: Json) -> bool:
        if (message["channel"] != channel or message.get("bot_id") != slack.bot_id
                or message.get("thread_ts") != thread_ts or message["ts"] == thread_ts
                or slack.is_streaming(channel, message["ts"]) or in_progress(message)):
            return False
        return is_answer(message) if answer else True

    return await slack.wait_for_message(matches, timeout=timeout)


async def eventually(check: Callable[[], Awaitable[T | None]], what: str, timeout_s: float = 20) -> T:
    """Poll `check` until it returns something other than None/False."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def sync_rows(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch("SELECT id, trigger, requested_by, status FROM sync_runs ORDER BY id"))
    finally:
        await conn.close()


async def indexed_titles(dsn: str, space_key: str = "ENG") -> set[str]:
    """Titles of current pages that have chunks: what a question can find."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT p.title FROM pages p WHERE p.space_key = $1 AND p.status = 'current' "
            "AND EXISTS (SELECT 1 FROM chunks c WHERE c.page_id = p.page_id)", space_key)
    finally:
        await conn.close()
    return {r["title"] for r in rows}


def confluence_titles(confluence: ConfluenceEmulator, space_key: str = "ENG") -> set[str]:
    return {p.title for p in confluence.pages.values() if p.space_key == space_key and p.status == "current"}


def hold_body_fetches(confluence: ConfluenceEmulator, delay_s: float = 1.0) -> None:
    """Every page body fetch waits `delay_s` until `confluence.clear_faults()`: a sync of N pages stays in
    flight for about N / 4 (the fetch concurrency) seconds, or until released; releasing costs `delay_s`."""
    confluence.slow_next(delay_s, 100_000, path_contains=BODY_FETCH)


# ---- scheduler and /docsync at the same moment ------------------------------------------------------------


async def test_scheduler_and_docsync_at_once_run_one_sync_and_the_admin_is_told_who(
    pg_server: EmbeddedPostgres, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.operations.scheduler")

    def fill(confluence: ConfluenceEmulator) -> None:
        add_samples(confluence)
        add_team_pages(confluence, "ENG", 24)  # 32 pages: held for ~8 s at most
        hold_body_fetches(confluence)

    async with slack_stack(pg_server, tmp_path, setup=fill) as stack:
        slack, confluence = stack.slack, stack.confluence
        assert await indexed_titles(stack.dsn) == set()  # empty base: the scheduler's first run is now
        scheduler = daily_scheduler(stack.services)
        try:
            envelope, _ = await asyncio.gather(
                slack.slash_command("/docsync", "ENG", user_id="UADMIN"), scheduler.start())
            assert (await slack.wait_for_ack(envelope)).latency_s < 3

            def skipped() -> str | None:
                return next((r.getMessage() for r in caplog.records
                             if "scheduled sync skipped" in r.getMessage()), None)

            async def loser_told() -> str | None:
                refused = [p for p in slack.response_url_posts if "already running" in p["body"].get("text", "")]
                return "docsync" if refused else ("scheduler" if skipped() else None)

            loser = await eventually(loser_told, "the second sync to be refused")
            confluence.clear_faults()
            [run] = await eventually(
                lambda: _finished(stack.dsn), "the one sync to finish", timeout_s=30)
        finally:
            await scheduler.stop()

        assert run["status"] == "succeeded"
        if loser == "docsync":
            # The scheduler won; the admin is told, privately, which run holds the lock, since when, by whom.
            [refusal] = [p for p in slack.response_url_posts if "already running" in p["body"].get("text", "")]
            assert refusal["body"]["response_type"] == "ephemeral" and refusal["user"] == "UADMIN"
            match = ALREADY_RUNNING.search(refusal["body"]["text"])
            assert match is not None, refusal["body"]["text"]
            assert (int(match.group(1)), match.group(2)) == (run["id"], "scheduler")
            assert run["trigger"] == "schedule"
            assert not [c for c in slack.calls if c.method == "chat.postMessage" and "started by" in
                        c.params.get("text", "")]
        else:
            # /docsync won; the scheduler says in the log whose run it skipped.
            assert run["trigger"] == "slack" and run["requested_by"] == "UADMIN"
            message = skipped()
            assert message is not None and f"sync #{run['id']} (slack by UADMIN)" in message
            await slack.wait_for("chat.update", lambda p: "succeeded" in p.get("text", ""), timeout=15)
        assert len(await sync_rows(stack.dsn)) == 1
        assert await indexed_titles(stack.dsn) == confluence_titles(confluence)


async def _finished(dsn: str) -> list[asyncpg.Record] | None:
    rows = await sync_rows(dsn)
    return rows if rows and all(r["status"] != "running" for r in rows) else None


# ---- two `askdocs run` processes on one database ----------------------------------------------------------


async def test_two_askdocs_processes_share_one_database_and_sync_once(
    tmp_path: Path, database_dsn: str, confluence: ConfluenceEmulator, openai_emulator: OpenAIEmulator,
) -> None:
    add_samples(confluence)
    add_team_pages(confluence, "ENG", 32)  # 40 pages: held for ~10 s at most, longer than a start-up skew
    hold_body_fetches(confluence)
    assert confluence.base_url is not None
    envs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        envs.append(child_env(
            tmp_path / name, DATABASE_URL=database_dsn, CONFLUENCE_BASE_URL=confluence.base_url,
            CONFLUENCE_EMAIL="bot@example.com", CONFLUENCE_API_TOKEN=CONFLUENCE_TOKEN, CONFLUENCE_SPACES="ENG",
            OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL=openai_emulator.base_url, EMBEDDING_PROVIDER="openai",
            EMBEDDING_MODEL=EMULATOR_EMBEDDING_MODEL, LLM_PROVIDER="none", API_PORT="0",
            SYNC_INTERVAL_HOURS="24"))
    async with (
        askdocs_run(tmp_path / "a", envs[0]) as first,
        askdocs_run(tmp_path / "b", envs[1]) as second,
        aiohttp.ClientSession() as http,
    ):
        processes = [first, second]
        urls = [(await p.wait_for_line(LISTENING)).group(1) for p in processes]
        assert len(set(urls)) == 2

        async def one_skipped() -> bool:
            return any("scheduled sync skipped" in p.output for p in processes)

        # Both schedulers fire at once on the empty base; the sync is held until the loser has said so.
        await eventually(one_skipped, "one process to skip the scheduled sync", timeout_s=30)
        confluence.clear_faults()
        [run] = await eventually(lambda: _finished(database_dsn), "the scheduled sync to finish", timeout_s=30)
        assert (run["trigger"], run["status"]) == ("schedule", "succeeded")

        for url in urls:
            async with http.post(f"{url}/api/query", json={"question": VPN_QUESTION}) as response:
                assert response.status == 200, await response.text()
                answer = await response.json()
            assert not answer["refused"] and answer["sources"]
        codes = await asyncio.gather(*(p.stop(signal.SIGTERM) for p in processes))

    assert codes == [0, 0], [p.output for p in processes]
    skippers = [p for p in processes if "scheduled sync skipped" in p.output]
    assert len(skippers) == 1
    assert f"sync #{run['id']} (schedule by scheduler)" in skippers[0].output or (
        "another process holds the sync lock" in skippers[0].output)
    for process in processes:
        assert "Traceback" not in process.output, process.output
        assert "sync scheduled every 24h" in process.output and "askdocs stopped" in process.output
    assert len(await sync_rows(database_dsn)) == 1
    assert await indexed_titles(database_dsn) == confluence_titles(confluence)


# ---- questions while a sync runs --------------------------------------------------------------------------


async def test_twenty_questions_during_a_sync_are_acked_fast_and_answered_once_each(
    pg_server: EmbeddedPostgres, tmp_path: Path,
) -> None:
    async with slack_stack(pg_server, tmp_path, setup=add_samples) as stack:
        slack, confluence, services = stack.slack, stack.confluence, stack.services
        first = await services.sync.run(spaces=["ENG"], trigger="cli")
        assert getattr(first, "status", None) == "succeeded"
        add_team_pages(confluence, "ENG", 32)  # 40 pages: held for ~10 s at most
        hold_body_fetches(confluence)
        started = await services.sync.start(spaces=["ENG"], force=True, trigger="api", requested_by="test")
        assert isinstance(started, StartedRun)
        await eventually(lambda: _bodies_fetched(confluence), "the sync to fetch page bodies")

        since = len(slack.calls)
        sent = await asyncio.gather(*(slack.mention(f"{VPN_QUESTION} ({i})") for i in range(20)))
        acks = [await slack.wait_for_ack(envelope) for envelope, _ in sent]
        assert max(a.latency_s for a in acks) < 3
        finals = [await final_message(slack, "C1", ts, since=since, timeout=30) for _, ts in sent]
        # Every question got its own cited answer, in its own thread, while the sync was still running.
        assert not started.task.done()
        assert all(any("<http" in t for t in context_texts(f)) for f in finals)
        for _, ts in sent:
            assert len(bot_replies(slack, "C1", ts)) == 1
        # One message per answer, no placeholder: extractive answers arrive whole, in one post each.
        assert len([c for c in slack.calls[since:] if c.method == "chat.postMessage" and c.ok]) == 20
        assert all(is_answer(c.params) for c in slack.calls[since:] if c.method == "chat.postMessage")

        # Only one sync at a time, whoever asks.
        busy = await services.sync.start(spaces=["ENG"], trigger="api", requested_by="someone-else")
        assert isinstance(busy, AlreadyRunning) and busy.run is not None and busy.run.id == started.run_id

        confluence.clear_faults()
        outcome = await asyncio.wait_for(started.wait(), 30)
        assert outcome.status == "succeeded" and outcome.report.pages_failed == 0
        assert [r["status"] for r in await sync_rows(stack.dsn)] == ["succeeded", "succeeded"]
        assert await indexed_titles(stack.dsn) == confluence_titles(confluence)


async def _bodies_fetched(confluence: ConfluenceEmulator) -> bool:
    return confluence.count(BODY_FETCH) > 0
