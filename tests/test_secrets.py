"""Tokens, keys and passwords never show up where people look: logs, error messages, alerts, the database's
run records, the HTTP API's answers, `repr(settings)` and the CLI's output.

Known secrets are planted everywhere they can be configured, every failure path that handles one is driven
for real (a wrong Confluence token, a 401 from the embedding API, a dead database DSN with a password), and
everything emitted is searched for each secret and for the forms it travels in (Basic auth, Bearer).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.logs import configure_logging
from bot.operations.sync_runner import RunOutcome
from bot.services import build_services
from bot.settings import Settings
from bot.slack.ops_blocks import ops_alert
from db.connect import open_database
from db.errors import DatabaseError
from ingest.confluence import ConfluenceClient, RetryPolicy
from ingest.embedders import EmbeddingError
from ingest.embedders.openai import OpenAIEmbedder
from ingest.errors import ConfluenceAuthError
from tests.conftest import EMULATOR_EMBEDDING_MODEL
from tests.emulators.confluence import ConfluenceEmulator
from tests.emulators.openai import OpenAIEmulator
from tests.wiki import add_samples

ROOT = Path(__file__).resolve().parent.parent
EMAIL = "bot@example.com"
CONFLUENCE_TOKEN = "confluence-secret-token"  # the emulators' real credentials (conftest)
OPENAI_KEY = "sk-test-secret-key"
SLACK_BOT_TOKEN = "xoxb-1111-2222-secret-bot-token"
SLACK_APP_TOKEN = "xapp-1-A111-secret-app-token"
API_KEY = "api-key-secret-4242"
DB_PASSWORD = "db-pass-S3cret-9"
DEAD_DSN = f"postgresql://askdocs:{DB_PASSWORD}@127.0.0.1:1/askdocs"  # port 1: refused at once
WRONG_CONFLUENCE_TOKEN = "wrong-confluence-token-7777"
WRONG_PAT = "wrong-personal-access-token-8888"
WRONG_OPENAI_KEY = "sk-wrong-openai-key-123456789"
WRONG_API_KEY = "api-key-wrong-0000"
MakeSettings = Callable[..., Settings]
FAST = RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.02, max_retry_after_s=0.02)


def basic(email: str, token: str) -> str:
    return base64.b64encode(f"{email}:{token}".encode()).decode()


SECRETS = [
    CONFLUENCE_TOKEN, basic(EMAIL, CONFLUENCE_TOKEN), OPENAI_KEY, SLACK_BOT_TOKEN, SLACK_APP_TOKEN, API_KEY,
    DB_PASSWORD, WRONG_CONFLUENCE_TOKEN, basic(EMAIL, WRONG_CONFLUENCE_TOKEN), WRONG_PAT, WRONG_OPENAI_KEY,
    WRONG_API_KEY,
]


def assert_no_secret(text: str, where: str) -> None:
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, f"{where} leaks {leaked}"


def everything_about(error: BaseException) -> str:
    """What a log line, a traceback or an error report could show of an exception."""
    return "\n".join([str(error), repr(error), *traceback.format_exception(error)])


@pytest.fixture
def secret_settings(make_settings: MakeSettings) -> Settings:
    return make_settings(
        slack_bot_token=SLACK_BOT_TOKEN, slack_app_token=SLACK_APP_TOKEN, api_key=API_KEY,
        slack_ops_channel="C0PS", confluence_max_concurrency=2,
    )


@pytest.fixture
def logs(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], str]]:
    """configure_logging as the CLI does it, at DEBUG for every library too; returns a reader of stderr."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    noisy = ["aiohttp.access", "httpx", "openai", "slack_sdk", "asyncio", "ingest", "bot", "db"]
    levels = {name: logging.getLogger(name).level for name in noisy}
    configure_logging(level="DEBUG", fmt="json", secrets=[*SECRETS, DEAD_DSN])
    for name in noisy:  # configure_logging keeps chatty libraries at WARNING: open them all up
        logging.getLogger(name).setLevel(logging.DEBUG)
    captured: list[str] = []

    def read() -> str:
        captured.append(capsys.readouterr().err)
        return "".join(captured)

    yield read
    root.handlers[:], _ = saved
    root.setLevel(saved[1])
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


# ---- settings and error messages -------------------------------------------------------------------------


def test_settings_never_show_a_secret(make_settings: MakeSettings, secret_settings: Settings) -> None:
    settings = make_settings(database_url=DEAD_DSN, slack_bot_token=SLACK_BOT_TOKEN, api_key=API_KEY)
    for shown in (settings, secret_settings):
        for text in (repr(shown), str(shown), shown.model_dump_json(), repr(shown.model_dump())):
            assert_no_secret(text, "settings")
    assert DB_PASSWORD in "".join(settings.secrets())  # known to the log filter, though
    assert set(secret_settings.secrets()) >= {CONFLUENCE_TOKEN, OPENAI_KEY, SLACK_BOT_TOKEN, SLACK_APP_TOKEN,
                                              API_KEY}


async def test_a_wrong_confluence_token_or_pat_is_not_in_the_error(confluence: ConfluenceEmulator) -> None:
    assert confluence.base_url is not None
    cloud = ConfluenceClient(confluence.base_url, email=EMAIL, api_token=WRONG_CONFLUENCE_TOKEN, retry=FAST)
    datacenter = ConfluenceClient(confluence.base_url, pat=WRONG_PAT, retry=FAST)
    for client in (cloud, datacenter):
        async with client:
            with pytest.raises(ConfluenceAuthError) as raised:
                await client.get_space("ENG")
            assert raised.value.status == 401 and "credentials" in str(raised.value)
            assert_no_secret(everything_about(raised.value) + repr(client), "ConfluenceAuthError")


async def test_a_401_from_the_embedding_api_does_not_echo_the_key(openai_emulator: OpenAIEmulator) -> None:
    embedder = OpenAIEmbedder(api_key=WRONG_OPENAI_KEY, base_url=openai_emulator.base_url,
                              model=EMULATOR_EMBEDDING_MODEL, max_retries=2, retry_base_delay_s=0.01)
    try:
        with pytest.raises(EmbeddingError) as raised:
            await embedder.embed(["hello"])
    finally:
        await embedder.aclose()
    assert raised.value.status == 401 and "invalid_api_key" in str(raised.value)
    # The emulator, like OpenAI, quotes part of the key back ("sk-***89"): none of that goes on.
    assert "***" not in str(raised.value)
    assert_no_secret(everything_about(raised.value), "EmbeddingError")


@pytest.mark.parametrize("dsn", [
    DEAD_DSN,
    f"postgresql://askdocs:{DB_PASSWORD}@127.0.0.1:notaport/askdocs",
    f"postgresql://askdocs:{DB_PASSWORD}@127.0.0.1:1/askdocs?sslmode=bogus",
    f"askdocs:{DB_PASSWORD}@127.0.0.1:1/askdocs",
])
async def test_a_dead_or_malformed_dsn_gives_one_clear_error_without_its_password(
    tmp_path: Path, dsn: str
) -> None:
    with pytest.raises(DatabaseError) as raised:  # not a bare ValueError from the driver: the CLI prints one line
        await open_database(dsn, data_dir=tmp_path)
    if dsn == DEAD_DSN:
        assert "127.0.0.1:1" in str(raised.value)  # says where, so the operator can fix it
    else:
        assert "DATABASE_URL" in str(raised.value)
    assert_no_secret(everything_about(raised.value), "DatabaseError")


# ---- logs, run records and alerts of real failing runs ---------------------------------------------------


async def test_failing_runs_leave_no_secret_in_logs_records_or_alerts(
    confluence: ConfluenceEmulator, openai_emulator: OpenAIEmulator, make_settings: MakeSettings,
    secret_settings: Settings, logs: Callable[[], str],
) -> None:
    ids = add_samples(confluence)
    logging.getLogger("askdocs.test").warning("positive control: %s", OPENAI_KEY)
    outcomes: list[RunOutcome] = []

    # 1. A page Confluence refuses (400) and a whole run whose embedding API rejects the key.
    confluence.fail_next(1, status=400, path_contains=f"/pages/{ids['Howto Vpn Setup']}?")
    wrong_key = OpenAIEmbedder(api_key=WRONG_OPENAI_KEY, base_url=openai_emulator.base_url,
                               model=EMULATOR_EMBEDDING_MODEL, dimension=384, max_retries=1)
    async with build_services(secret_settings, embedder=wrong_key) as services:
        outcome = await services.sync.run(spaces=["ENG"], trigger="cli", requested_by="test")
        assert isinstance(outcome, RunOutcome) and outcome.report.pages_failed == len(ids)
        outcomes.append(outcome)
        async with services.database.pool.acquire() as conn:
            errors = [r["error"] for r in await conn.fetch("SELECT error FROM sync_failures")]
        assert any("HTTP 401" in e for e in errors) and any("400" in e for e in errors)

    # 2. Confluence rejects the token: the whole space fails.
    wrong_token = make_settings(confluence_api_token=WRONG_CONFLUENCE_TOKEN, api_key=API_KEY,
                                slack_bot_token=SLACK_BOT_TOKEN)
    async with build_services(wrong_token) as services:
        outcome = await services.sync.run(spaces=["ENG"], trigger="cli", requested_by="test")
        assert isinstance(outcome, RunOutcome) and outcome.status == "failed"
        assert "credentials" in outcome.failed_spaces["ENG"]
        outcomes.append(outcome)
        async with services.database.pool.acquire() as conn:
            records = [json.dumps([dict(r) for r in await conn.fetch(query)], default=str) for query in (
                "SELECT error, counters::text FROM sync_runs", "SELECT * FROM sync_failures",
            )]

    for n, outcome in enumerate(outcomes):
        alert = json.dumps(ops_alert(outcome, lambda page_id: f"{confluence.base_url}/wiki/x/{page_id}"))
        assert_no_secret(alert, f"ops alert {n}")
        assert_no_secret(json.dumps(outcome.counters(), default=str) + repr(outcome), f"outcome {n}")
    for record in records:
        assert_no_secret(record, "sync_runs / sync_failures rows")

    emitted = logs()
    assert "positive control: [redacted]" in emitted  # the capture works and the filter is on
    assert "page " in emitted and "failed" in emitted  # the failures were logged...
    assert_no_secret(emitted, "logs")  # ...without a secret


# ---- the HTTP API ----------------------------------------------------------------------------------------


async def test_the_api_refuses_a_missing_or_wrong_key_without_echoing_keys(
    secret_settings: Settings, logs: Callable[[], str]
) -> None:
    from bot.http.api import build_api
    from bot.http.middleware import API_KEY_HEADER

    async with build_services(secret_settings) as services:
        client = TestClient(TestServer(build_api(services)))
        await client.start_server()
        try:
            seen: list[str] = []
            for headers in ({}, {API_KEY_HEADER: WRONG_API_KEY}, {API_KEY_HEADER: API_KEY[:-1]}):
                for method, path in (("POST", "/api/query"), ("POST", "/api/sync"), ("GET", "/api/sync/1")):
                    response = await client.request(method, path, headers=headers, json={"question": "vpn?"})
                    body = await response.text()
                    assert response.status == 401, (method, path, headers)
                    assert json.loads(body)["ok"] is False
                    seen.append(body + str(dict(response.headers)))
            allowed = await client.post("/api/query", headers={API_KEY_HEADER: API_KEY},
                                        json={"question": "How do I reach the VPN?"})
            assert allowed.status == 200  # the right key works: the 401s were about the key
            seen.append(await allowed.text())
        finally:
            await client.close()
    assert_no_secret("\n".join(seen), "API responses")
    assert_no_secret(logs(), "logs")


# ---- the CLI, as an operator runs it ---------------------------------------------------------------------


async def askdocs(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Run the real CLI in a subprocess (the emulators keep serving meanwhile): (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", *args, env=env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, out.decode(), err.decode()


async def test_cli_output_never_shows_a_secret(
    confluence: ConfluenceEmulator, openai_emulator: OpenAIEmulator, database_dsn: str, tmp_path: Path
) -> None:
    ids = add_samples(confluence)
    confluence.fail_next(1, status=400, path_contains=f"/pages/{ids['Oncall Handbook']}?")
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR", "HF_HUB_OFFLINE")}
    env = {
        **keep, "PYTHONPATH": str(ROOT), "DATABASE_URL": database_dsn, "ASKDOCS_DATA_DIR": str(tmp_path / "data"),
        "CONFLUENCE_BASE_URL": str(confluence.base_url), "CONFLUENCE_EMAIL": EMAIL,
        "CONFLUENCE_API_TOKEN": CONFLUENCE_TOKEN, "CONFLUENCE_SPACES": "ENG",
        "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": openai_emulator.base_url,
        "EMBEDDING_PROVIDER": "openai", "EMBEDDING_MODEL": EMULATOR_EMBEDDING_MODEL, "LLM_PROVIDER": "none",
        "SLACK_BOT_TOKEN": SLACK_BOT_TOKEN, "SLACK_APP_TOKEN": SLACK_APP_TOKEN, "API_KEY": API_KEY,
        "LOG_LEVEL": "DEBUG",
    }
    code, synced, sync_log = await askdocs("sync", "--json", env=env, cwd=tmp_path)
    assert code == 1, sync_log  # partial: one page failed
    report = json.loads(synced)
    assert report["status"] == "partial" and len(report["failures"]) == 1
    assert "Oncall Handbook" in sync_log and "failed" in sync_log  # the DEBUG log did run

    code, status, status_log = await askdocs("status", "--json", env=env, cwd=tmp_path)
    assert code == 0 and json.loads(status)["last_sync"]["status"] == "partial", status_log
    code, asked, ask_log = await askdocs("ask", "How do I set up the VPN?", env=env, cwd=tmp_path)
    assert code == 0 and "VPN" in asked, ask_log
    code, dead_out, dead = await askdocs("status", env={**env, "DATABASE_URL": DEAD_DSN}, cwd=tmp_path)
    assert code == 2 and "cannot connect to the database at 127.0.0.1:1" in dead, dead

    for name, text in (("sync", synced + sync_log), ("status", status + status_log), ("ask", asked + ask_log),
                       ("status, dead db", dead_out + dead)):
        assert_no_secret(text, f"askdocs {name}")
