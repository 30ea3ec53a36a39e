"""`askdocs run` as a real subprocess: it serves, syncs on schedule, keeps secrets out of its output and
stops cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from tests.wiki import add_samples

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "planted-api-key-7f3c9a1e5b"
OPENAI_KEY = "sk-test-secret-key"  # what the openai_emulator fixture accepts
CONFLUENCE_TOKEN = "confluence-secret-token"  # what the confluence fixture accepts
LISTENING = re.compile(r"askdocs api listening on (http://\S+)")
FIRST_SCHEDULED_RUN = "SELECT id FROM sync_runs WHERE trigger = 'schedule' ORDER BY id LIMIT 1"
QUESTION = "When is the staging database rebuilt?"


class AskdocsProcess:
    """`python -m bot.cli run` with its output collected as it comes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stderr: list[str] = []
        self.stdout: list[str] = []
        assert process.stderr is not None and process.stdout is not None
        self._readers = [asyncio.create_task(self._collect(process.stderr, self.stderr)),
                         asyncio.create_task(self._collect(process.stdout, self.stdout))]

    @staticmethod
    async def _collect(stream: asyncio.StreamReader, into: list[str]) -> None:
        async for line in stream:
            into.append(line.decode(errors="replace"))

    @property
    def output(self) -> str:
        return "".join(self.stderr) + "".join(self.stdout)

    async def wait_for_line(self, pattern: re.Pattern[str], timeout_s: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.stderr:
                if match := pattern.search(line):
                    return match
            if self.process.returncode is not None:
                break
            await asyncio.sleep(0.05)
        raise AssertionError(f"no line matching {pattern.pattern!r}; output:\n{self.output}")

    async def stop(self, sig: signal.Signals, timeout_s: float = 10) -> int:
        started = time.monotonic()
        self.process.send_signal(sig)
        code = await asyncio.wait_for(self.process.wait(), timeout_s)
        await asyncio.gather(*self._readers)
        assert time.monotonic() - started < timeout_s
        return code


def child_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """A clean environment: no proxies, no Slack tokens, nothing inherited that Settings would read."""
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR") if key in os.environ}
    env.update({"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1", "ASKDOCS_DATA_DIR": str(tmp_path / "data")})
    env.update(settings)
    return env


@asynccontextmanager
async def askdocs_run(tmp_path: Path, env: dict[str, str]) -> AsyncIterator[AskdocsProcess]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    running = AskdocsProcess(process)
    try:
        yield running
    finally:
        if process.returncode is None:
            with suppress(ProcessLookupError):
                process.kill()
            await process.wait()


async def scheduled_run_id(dsn: str, timeout_s: float = 30) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run_id = await conn.fetchval(FIRST_SCHEDULED_RUN)
            if run_id is not None:
                return int(run_id)
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    raise AssertionError("the scheduler never started a sync")


async def finished_run(http: aiohttp.ClientSession, url: str, run_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        async with http.get(f"{url}/api/sync/{run_id}", headers={"X-API-Key": API_KEY}) as response:
            assert response.status == 200
            run: dict[str, Any] = await response.json()
        if run["status"] != "running":
            return run
        await asyncio.sleep(0.1)
    raise AssertionError(f"sync #{run_id} never finished")


async def test_askdocs_run_serves_syncs_on_schedule_and_stops_on_sigterm(
    tmp_path: Path, database_dsn: str, confluence: Any, openai_emulator: Any
) -> None:
    add_samples(confluence)
    env = child_env(
        tmp_path, DATABASE_URL=database_dsn, CONFLUENCE_BASE_URL=confluence.base_url,
        CONFLUENCE_EMAIL="bot@example.com", CONFLUENCE_API_TOKEN=CONFLUENCE_TOKEN, CONFLUENCE_SPACES="ENG",
        OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL=openai_emulator.base_url, EMBEDDING_PROVIDER="openai",
        EMBEDDING_MODEL="emulator-embedding", LLM_PROVIDER="none", API_HOST="127.0.0.1", API_PORT="0",
        API_KEY=API_KEY, SYNC_INTERVAL_HOURS="24",
    )
    async with askdocs_run(tmp_path, env) as askdocs, aiohttp.ClientSession() as http:
        url = (await askdocs.wait_for_line(LISTENING)).group(1)
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")

        # The knowledge base is empty, so the scheduler syncs at once.
        run = await finished_run(http, url, await scheduled_run_id(database_dsn))
        assert run["status"] == "succeeded" and run["requested_by"] == "scheduler"
        assert run["counters"]["pages_added"] > 0

        async with http.post(f"{url}/api/query", json={"question": QUESTION}) as response:
            assert response.status == 401
        async with http.post(f"{url}/api/query", json={"question": QUESTION},
                             headers={"X-API-Key": API_KEY}) as response:
            assert response.status == 200
            answer = await response.json()
        assert not answer["refused"] and answer["sources"]

        async with http.get(f"{url}/metrics") as response:
            metrics = await response.text()
        assert 'askdocs_sync_runs_total{status="succeeded"} 1' in metrics
        assert "askdocs_question_seconds_count 1" in metrics and "\naskdocs_pages " in metrics
        async with http.get(f"{url}/healthz") as response:
            health = await response.json()
        assert health["ok"] and health["pages"] == run["counters"]["pages_added"]
        assert health["next_sync_at"] is not None

        # A sync in flight at SIGTERM is cancelled (its page writes commit or roll back whole).
        confluence.slow_next(10.0)
        async with http.post(f"{url}/api/sync", json={}, headers={"X-API-Key": API_KEY}) as response:
            assert response.status == 202
            in_flight = (await response.json())["run_id"]
        assert await askdocs.stop(signal.SIGTERM, timeout_s=8) == 0

    output = askdocs.output
    assert "Traceback" not in output, output
    assert "received SIGTERM: shutting down" in output and "askdocs stopped" in output
    for fact in ("database: PostgreSQL at", "embeddings: openai emulator-embedding", "answers: extractive",
                 "spaces: ENG", "sync interval: 24h"):
        assert fact in output, fact
    for secret in (API_KEY, OPENAI_KEY, CONFLUENCE_TOKEN, database_dsn):
        assert secret not in output
    conn = await asyncpg.connect(database_dsn)
    try:
        status, error = await conn.fetchrow("SELECT status, error FROM sync_runs WHERE id = $1", in_flight)
    finally:
        await conn.close()
    assert (status, error) == ("failed", "cancelled: askdocs was shutting down")


async def test_without_an_api_key_the_api_stays_on_localhost(
    tmp_path: Path, database_dsn: str, openai_emulator: Any
) -> None:
    env = child_env(
        tmp_path, DATABASE_URL=database_dsn, OPENAI_API_KEY=OPENAI_KEY,
        OPENAI_BASE_URL=openai_emulator.base_url, EMBEDDING_PROVIDER="openai",
        EMBEDDING_MODEL="emulator-embedding", LLM_PROVIDER="none", API_HOST="0.0.0.0", API_PORT="0",
    )
    async with askdocs_run(tmp_path, env) as askdocs, aiohttp.ClientSession() as http:
        url = (await askdocs.wait_for_line(LISTENING)).group(1)
        assert url.startswith("http://127.0.0.1:")
        async with http.post(f"{url}/api/query", json={"question": QUESTION}) as response:
            assert response.status == 200  # no key configured: none asked for
        assert await askdocs.stop(signal.SIGINT) == 0
    output = askdocs.output
    assert "API_HOST=0.0.0.0 ignored: no API_KEY is set" in output
    assert "scheduled sync off" in output and "Traceback" not in output
