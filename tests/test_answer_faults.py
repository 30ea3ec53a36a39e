"""Answers when a dependency fails: the chat model (rate limits, errors, timeouts), the embedding service, the
database. The user always gets something honest — the model's answer, cited quotes with a note, or a short
error — never silence and never a traceback.

Real service graph, real `openai` client against the OpenAI emulator, real SlackBot against the Slack
emulator, `askdocs ask` as a subprocess.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.answering.chat import CUT_SHORT_NOTE, OpenAIChat
from bot.answering.engine import AnswerEngine
from bot.answering.models import Answer
from bot.http.api import build_api
from bot.services import Services, evidence_policy
from db.embedded import EmbeddedPostgres
from tests.conftest import EMULATOR_EMBEDDING_MODEL
from tests.emulators.openai import OpenAIEmulator
from tests.test_concurrency import (
    SlackStack,
    bot_replies,
    context_texts,
    final_message,
    slack_stack,
)
from tests.test_runtime import OPENAI_KEY, child_env
from tests.wiki import add_samples

QUESTION = "When is the staging database rebuilt?"
VPN_QUESTION = "how do I connect my laptop to the corporate VPN?"
FALLBACK_NOTE = re.compile(
    r"^Quoting the pages instead: (?P<why>the language model .+)\.$")
CITATION = re.compile(r"\[\d+\]")
DB_PASSWORD = "db-password-5e1f0c"


# ---- the answer engine with a chat model whose retry waits are milliseconds -------------------------------


@pytest.fixture
async def synced(services: Services, confluence: Any) -> Services:
    add_samples(confluence)
    outcome = await services.sync.run(spaces=["ENG"], trigger="cli")
    assert getattr(outcome, "status", None) == "succeeded"
    return services


@asynccontextmanager
async def llm_engine(services: Services, openai: OpenAIEmulator, **chat_options: Any) -> AsyncIterator[AnswerEngine]:
    """The services' pool and embedder with an OpenAIChat aimed at the emulator (waits shrunk, not patched)."""
    options: dict[str, Any] = {"max_retries": 3, "retry_base_delay_s": 0.01, "retry_max_delay_s": 0.05}
    options.update(chat_options)
    chat = OpenAIChat(api_key=OPENAI_KEY, base_url=openai.base_url, **options)
    try:
        yield AnswerEngine(pool=services.database.pool, embedder=services.embedder, chat=chat,
                           evidence=evidence_policy(services.embedder.model_name))
    finally:
        await chat.aclose()


def chat_statuses(openai: OpenAIEmulator) -> list[int]:
    return [r.status for r in openai.records if r.endpoint == "chat"]


def assert_honest_fallback(answer: Answer, *, why: str) -> None:
    """Extractive quotes, cited, under a note that names the model failure."""
    assert answer.mode == "extractive" and not answer.refused
    assert answer.note is not None
    match = FALLBACK_NOTE.match(answer.note)
    assert match is not None, answer.note
    assert why in match.group("why"), answer.note
    assert OPENAI_KEY not in answer.note and "Traceback" not in answer.note
    assert answer.sources and CITATION.search(answer.text), answer.text
    assert all(s.url.startswith("http") for s in answer.sources)


async def test_rate_limited_model_is_retried_and_the_answer_is_the_models(
    synced: Services, openai_emulator: OpenAIEmulator,
) -> None:
    openai_emulator.fail_next("chat", status=429, n=2)
    async with llm_engine(synced, openai_emulator) as engine:
        answer = await engine.answer(QUESTION)
    assert chat_statuses(openai_emulator) == [429, 429, 200]
    assert answer.mode == "llm" and answer.note is None and not answer.refused
    assert "Sunday at 02:00 UTC" in answer.text and CITATION.search(answer.text)
    assert answer.sources and answer.sources[0].title == "Staging Environment"


async def test_a_model_that_rejects_max_tokens_still_answers_and_a_cut_answer_says_so(
    synced: Services, openai_emulator: OpenAIEmulator,
) -> None:
    async with llm_engine(synced, openai_emulator, model="my-reasoning-model") as engine:
        answer = await engine.answer(QUESTION)
        assert answer.mode == "llm" and answer.note is None  # not a silent extractive fallback (issue 16)
        assert "Sunday at 02:00 UTC" in answer.text
        openai_emulator.script_reply("The staging database is rebuilt every Sunday at 02:00 UTC [1]. " * 200)
        cut = await engine.answer(QUESTION)
    assert cut.mode == "llm" and cut.text.endswith(CUT_SHORT_NOTE)


async def test_persistent_model_error_falls_back_to_cited_quotes_with_a_note(
    synced: Services, openai_emulator: OpenAIEmulator,
) -> None:
    openai_emulator.fail_next("chat", status=500, n=3)
    async with llm_engine(synced, openai_emulator, max_retries=3) as engine:
        answer = await engine.answer(QUESTION)
    assert chat_statuses(openai_emulator) == [500, 500, 500]
    assert_honest_fallback(answer, why="HTTP 500")
    assert "tried 3 times" in (answer.note or "")
    assert "Sunday at 02:00 UTC" in answer.text  # the quote is the page's own sentence


async def test_model_timeout_falls_back_with_a_note(synced: Services, openai_emulator: OpenAIEmulator) -> None:
    for _ in range(2):  # both attempts outlive the client's timeout
        openai_emulator.delay_next("chat", 3)
    started = time.monotonic()
    async with llm_engine(synced, openai_emulator, timeout_s=0.5, max_retries=2) as engine:
        answer = await engine.answer(QUESTION)
    assert time.monotonic() - started < 5  # two 0.5 s timeouts, not two of the emulator's 3 s delays
    assert_honest_fallback(answer, why="timed out after 0.5 s")
    assert "tried 2 times" in (answer.note or "")


async def test_model_failing_mid_answer_falls_back_to_whole_quotes(
    synced: Services, openai_emulator: OpenAIEmulator,
) -> None:
    openai_emulator.break_stream_next(after_deltas=1)
    shown: list[str] = []

    async def on_delta(text: str) -> None:
        shown.append(text)

    async with llm_engine(synced, openai_emulator) as engine:
        answer = await engine.answer(QUESTION, on_delta=on_delta)
    assert shown  # half an answer had been streamed…
    assert_honest_fallback(answer, why="stopped mid-answer")  # …and is replaced, not left half-written
    assert len(chat_statuses(openai_emulator)) == 1  # not retried: it would repeat half an answer


# ---- Slack and the HTTP API over one stack with the model on ----------------------------------------------


@pytest.fixture(scope="module")
async def stack(pg_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SlackStack]:
    async with slack_stack(pg_server, tmp_path_factory.mktemp("faults"), llm=True, embedding_attempts=3,
                           setup=add_samples) as built:
        outcome = await built.services.sync.run(spaces=["ENG"], trigger="cli")
        assert getattr(outcome, "status", None) == "succeeded"
        yield built


async def test_slack_user_gets_cited_quotes_and_the_note_when_the_model_is_down(stack: SlackStack) -> None:
    slack = stack.slack
    stack.openai.fail_next("chat", status=500, n=3)  # every attempt the production policy makes
    since = len(slack.calls)
    _, ts = await slack.mention(QUESTION)
    final = await final_message(slack, "C1", ts, since=since, timeout=20)
    [reply] = bot_replies(slack, "C1", ts)
    assert final["ts"] == reply["ts"]  # in the question's thread, in place of the placeholder
    notes = [t for t in context_texts(final) if t.startswith(":warning:")]
    assert len(notes) == 1 and "the language model is unavailable" in notes[0]
    assert "HTTP 500" in notes[0] and "Quoting the pages instead" in notes[0]
    assert "Sunday at 02:00 UTC" in final["text"] and CITATION.search(final["text"])
    assert any("<http" in t and "Staging Environment" in t for t in context_texts(final))
    # Back to normal once the model answers again.
    since = len(slack.calls)
    _, ts = await slack.mention(QUESTION)
    final = await final_message(slack, "C1", ts, since=since)
    assert not [t for t in context_texts(final) if t.startswith(":warning:")]


async def test_embedding_outage_is_a_clear_error_in_api_and_slack_and_both_recover(stack: SlackStack) -> None:
    slack, openai = stack.slack, stack.openai
    client: TestClient[Any, Any] = TestClient(TestServer(build_api(stack.services)))
    await client.start_server()
    try:
        openai.fail_next("embeddings", status=500, n=3)  # the stack's embedder tries 3 times
        response = await client.post("/api/query", json={"question": QUESTION})
        body = await response.json()
        assert response.status == 502 and body["ok"] is False and body["status"] == 502
        assert body["error"].startswith("the embedding service failed"), body
        assert OPENAI_KEY not in body["error"] and "Traceback" not in body["error"]

        openai.fail_next("embeddings", status=500, n=3)
        since = len(slack.calls)
        _, ts = await slack.mention(QUESTION)
        apology = await final_message(slack, "C1", ts, since=since, answer=False)
        assert apology["text"].startswith("Sorry, something went wrong while answering")
        assert re.search(r"\(ref `[0-9a-f]{8}`\)", apology["text"])
        assert [m["ts"] for m in bot_replies(slack, "C1", ts)] == [apology["ts"]]

        # The service is back: both answer again.
        response = await client.post("/api/query", json={"question": QUESTION})
        assert response.status == 200
        answer = await response.json()
        assert not answer["refused"] and answer["sources"]
        since = len(slack.calls)
        _, ts = await slack.mention(QUESTION)
        await final_message(slack, "C1", ts, since=since)
    finally:
        await client.close()


# ---- `askdocs ask` when the database is gone ----------------------------------------------------------------


def with_password(dsn: str, *, database: str | None = None) -> str:
    """The same server with a password in the DSN (trust auth ignores it), so its absence can be checked."""
    base, _, query = dsn.partition("?")
    scheme, _, rest = base.partition("://")
    where = rest.split("@", 1)[1]
    host_and_db = where if database is None else f"{where.rsplit('/', 1)[0]}/{database}"
    return f"{scheme}://postgres:{DB_PASSWORD}@{host_and_db}?{query}"


async def askdocs_ask(tmp_path: Path, dsn: str, openai: OpenAIEmulator) -> asyncio.subprocess.Process:
    env = child_env(tmp_path, DATABASE_URL=dsn, OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL=openai.base_url,
                    EMBEDDING_PROVIDER="openai", EMBEDDING_MODEL=EMULATOR_EMBEDDING_MODEL, LLM_PROVIDER="none")
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "ask", QUESTION, cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


def assert_one_clear_line(stderr: bytes, stdout: bytes) -> str:
    text = stderr.decode()
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("askdocs: ") and "database" in lines[0], text
    assert "Traceback" not in text and DB_PASSWORD not in text + stdout.decode()
    return lines[0]


async def test_ask_against_a_dropped_database_exits_2_with_one_line(
    tmp_path: Path, pg_server: EmbeddedPostgres, openai_emulator: OpenAIEmulator,
) -> None:
    admin = await asyncpg.connect(pg_server.admin_dsn())
    try:
        await admin.execute("DROP DATABASE IF EXISTS askdocs_dropped")
    finally:
        await admin.close()
    process = await askdocs_ask(tmp_path, with_password(pg_server.admin_dsn(), database="askdocs_dropped"),
                                openai_emulator)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2, stderr.decode()
    line = assert_one_clear_line(stderr, stdout)
    assert "askdocs_dropped" in line and "does not exist" in line


async def test_database_dropped_while_answering_exits_2_with_one_line(
    tmp_path: Path, pg_server: EmbeddedPostgres, database_dsn: str, openai_emulator: OpenAIEmulator,
) -> None:
    # The first embeddings call is the startup probe; the second is the question, held while the database goes.
    openai_emulator.delay_next("embeddings", 0)
    openai_emulator.delay_next("embeddings", 2)
    process = await askdocs_ask(tmp_path, with_password(database_dsn), openai_emulator)
    try:
        deadline = time.monotonic() + 20
        while openai_emulator.embedding_requests < 2:
            assert process.returncode is None and time.monotonic() < deadline, "askdocs never asked"
            await asyncio.sleep(0.05)
        name = database_dsn.split("?")[0].rsplit("/", 1)[1]
        admin = await asyncpg.connect(pg_server.admin_dsn())
        try:
            await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        finally:
            await admin.close()
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 2, stderr.decode()
    assert_one_clear_line(stderr, stdout)
