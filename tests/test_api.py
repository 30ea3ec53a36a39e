"""The HTTP API through a real aiohttp server and client, the real service graph and the emulators."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.http.api import build_api
from bot.services import Services, build_services
from bot.settings import Settings
from db.embedded import EmbeddedPostgres
from tests.wiki import add_samples

API_KEY = "api-key-for-tests-0123456789"
QUESTION = "When is the staging database rebuilt?"
ANSWER_KEYS = {"answer", "sources", "latency_ms", "refused", "closest", "chunks_used", "query_id", "mode", "note",
               "truncated"}
SAMPLE_PATTERN = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? -?[0-9.e+-]+$|^-?Inf$")

MakeSettings = Callable[..., Settings]
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def keyed(make_settings: MakeSettings) -> AsyncIterator[Services]:
    async with build_services(make_settings(api_key=API_KEY)) as built:
        yield built


async def client_for(services: Services) -> Client:
    client: Client = TestClient(TestServer(build_api(services)))
    await client.start_server()
    return client


@pytest.fixture
async def api(services: Services) -> AsyncIterator[Client]:
    """A client for the API of the `services` fixture (no API_KEY configured: no key needed)."""
    client = await client_for(services)
    yield client
    await client.close()


@pytest.fixture
async def keyed_api(keyed: Services) -> AsyncIterator[Client]:
    client = await client_for(keyed)
    yield client
    await client.close()


async def sync_samples(services: Services, confluence: Any) -> dict[str, str]:
    ids = add_samples(confluence)
    outcome = await services.sync.run(spaces=["ENG"], trigger="cli", requested_by="test")
    assert getattr(outcome, "status", None) == "succeeded"
    return ids


async def wait_done(api: Client, run_id: int, headers: dict[str, str] | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        response = await api.get(f"/api/sync/{run_id}", headers=headers)
        assert response.status == 200
        run: dict[str, Any] = await response.json()
        if run["status"] != "running":
            return run
        await asyncio.sleep(0.05)
    raise AssertionError(f"sync #{run_id} still running")


def assert_error(body: dict[str, Any], status: int) -> None:
    assert body["ok"] is False and body["status"] == status
    assert isinstance(body["error"], str) and body["error"]


# ---- health and metrics ---------------------------------------------------------------------------------

async def test_healthz_reports_the_knowledge_base(services: Services, api: Client, confluence: Any) -> None:
    response = await api.get("/healthz")
    assert response.status == 200
    empty = await response.json()
    assert empty["ok"] is True and empty["database"] == "up" and empty["pages"] == 0
    assert empty["last_successful_sync_at"] is None

    ids = await sync_samples(services, confluence)
    health = await (await api.get("/healthz")).json()
    assert health["pages"] == len(ids) and health["chunks"] >= len(ids)
    assert health["spaces"]["ENG"]["pages"] == health["pages"]
    assert health["last_successful_sync_at"] is not None and health["running_sync_id"] is None
    assert (await (await api.get("/api/health")).json()) == {"status": "ok"}


async def test_healthz_and_query_answer_503_when_the_database_is_gone(
    make_settings: MakeSettings, pg_server: EmbeddedPostgres, database_dsn: str
) -> None:
    name = database_dsn.split("?")[0].rsplit("/", 1)[1]
    async with build_services(make_settings(api_key=API_KEY)) as services:
        client = await client_for(services)
        try:
            assert (await client.get("/healthz")).status == 200
            admin = await asyncpg.connect(pg_server.admin_dsn())
            try:
                await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
            finally:
                await admin.close()

            started = time.monotonic()
            response = await client.get("/healthz")
            assert response.status == 503 and time.monotonic() - started < 5
            health = await response.json()
            assert health["ok"] is False and health["database"] == "down" and health["status"] == 503
            assert name in health["error"] or "closed" in health["error"] or "Connection" in health["error"]

            response = await client.post("/api/query", json={"question": QUESTION},
                                         headers={"X-API-Key": API_KEY})
            body = await response.json()
            assert response.status == 503, body
            assert_error(body, 503)
            assert "unreachable" in body["error"] and "Traceback" not in body["error"]

            metrics = await (await client.get("/metrics")).text()
            assert "askdocs_database_up 0.0" in metrics
            assert 'askdocs_question_errors_total{reason="database",surface="api"} 1.0' in metrics
            for secret in services.settings.secrets():
                assert secret not in str(health) + str(body) + metrics
        finally:
            await client.close()


async def test_metrics_exposes_counters_and_gauges_read_at_scrape_time(
    services: Services, api: Client, confluence: Any
) -> None:
    await sync_samples(services, confluence)
    assert (await api.post("/api/query", json={"question": QUESTION})).status == 200
    assert (await api.post("/api/query", json={"question": ""})).status == 400

    response = await api.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await response.text()
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert samples and all(SAMPLE_PATTERN.match(line) for line in samples), samples
    for name, kind in [("askdocs_pages", "gauge"), ("askdocs_chunks", "gauge"),
                       ("askdocs_last_successful_sync_timestamp_seconds", "gauge"),
                       ("askdocs_database_up", "gauge"), ("askdocs_question_seconds", "histogram"),
                       ("askdocs_question_errors_total", "counter"), ("askdocs_sync_runs_total", "counter")]:
        assert f"# TYPE {name} {kind}" in text, name
    values = dict(line.rsplit(" ", 1) for line in samples)
    assert float(values["askdocs_pages"]) >= 7 and float(values["askdocs_chunks"]) > 0
    assert float(values["askdocs_last_successful_sync_timestamp_seconds"]) > time.time() - 60
    assert float(values["askdocs_question_seconds_count"]) == 1
    assert float(values['askdocs_question_errors_total{reason="bad_request",surface="api"}']) == 1
    assert float(values['askdocs_sync_runs_total{status="succeeded"}']) == 1
    assert values['askdocs_space_pages{space_key="ENG"}'] == values["askdocs_pages"]


# ---- /api/query -----------------------------------------------------------------------------------------

async def test_query_needs_the_right_api_key(keyed: Services, keyed_api: Client, confluence: Any) -> None:
    ids = await sync_samples(keyed, confluence)
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": API_KEY + "x"}):
        response = await keyed_api.post("/api/query", json={"question": QUESTION}, headers=headers)
        assert response.status == 401
        body = await response.json()
        assert body == {"ok": False, "error": "missing or wrong X-API-Key", "status": 401}
    assert (await keyed_api.get("/api/sync/1")).status == 401
    assert (await keyed_api.post("/api/sync", json={})).status == 401
    # Health and metrics stay open for probes and scrapers.
    assert (await keyed_api.get("/api/health")).status == 200
    assert (await keyed_api.get("/healthz")).status == 200

    response = await keyed_api.post("/api/query", json={"question": QUESTION, "unknown": [1, 2]},
                                    headers={"X-API-Key": API_KEY})
    assert response.status == 200
    answer = await response.json()
    assert set(answer) == ANSWER_KEYS
    assert not answer["refused"] and "Sunday" in answer["answer"] and answer["chunks_used"] > 0
    assert ids["Staging Environment"] in {s["page_id"] for s in answer["sources"]}
    assert all(s["url"].startswith(confluence.base_url) for s in answer["sources"])

    scoped = await keyed_api.post("/api/query", json={"question": QUESTION, "spaces": ["HR"]},
                                  headers={"X-API-Key": API_KEY})
    assert (await scoped.json())["sources"] == []


async def test_query_answers_without_a_key_when_none_is_configured(
    services: Services, api: Client, confluence: Any
) -> None:
    await sync_samples(services, confluence)
    response = await api.post("/api/query", json={"question": QUESTION})
    assert response.status == 200 and set(await response.json()) == ANSWER_KEYS
    # 10,000 characters is the limit, not an error.
    long = await api.post("/api/query", json={"question": ("staging database " * 700)[:10_000]})
    assert long.status == 200


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b'["a question"]', "JSON object"),
        (b"{}", "question: is required"),
        (b'{"question": ""}', "question: must not be empty"),
        (b'{"question": "   \\n "}', "question: must not be empty"),
        (b'{"question": 42}', "question: must be a string"),
        (b'{"question": "' + b"x" * 10_001 + b'"}', "question: is 10001 characters long; the limit is 10000"),
        (b'{"question": "vpn?", "spaces": "ENG"}', "spaces: must be a list"),
    ],
)
async def test_bad_queries_get_400_in_one_shape(api: Client, body: bytes, expected: str) -> None:
    response = await api.post("/api/query", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    answer = await response.json()
    assert_error(answer, 400)
    assert expected in answer["error"]


async def test_unknown_routes_and_methods_use_the_error_shape(api: Client) -> None:
    missing = await api.get("/api/nothing")
    assert missing.status == 404
    assert_error(await missing.json(), 404)
    wrong_method = await api.get("/api/query")
    assert wrong_method.status == 405
    assert_error(await wrong_method.json(), 405)
    bad_wait = await api.post("/api/sync?wait=maybe", json={})
    assert bad_wait.status == 400 and "wait" in (await bad_wait.json())["error"]


# ---- /api/sync ------------------------------------------------------------------------------------------

async def test_sync_starts_in_the_background_and_reports_its_run(api: Client, confluence: Any) -> None:
    ids = add_samples(confluence)
    response = await api.post("/api/sync", json={"spaces": ["ENG"]})
    assert response.status == 202
    started = await response.json()
    assert started["status"] == "running" and isinstance(started["run_id"], int)

    run = await wait_done(api, started["run_id"])
    assert run["status"] == "succeeded" and run["trigger"] == "api" and run["spaces"] == ["ENG"]
    assert run["counters"]["pages_added"] + run["counters"]["pages_skipped"] == len(ids)
    assert run["error"] is None and run["failures"] == [] and run["finished_at"] is not None

    missing = await api.get("/api/sync/987654321")
    assert missing.status == 404
    assert_error(await missing.json(), 404)


async def test_second_sync_while_one_runs_gets_409_with_who_and_since(api: Client, confluence: Any) -> None:
    add_samples(confluence)
    confluence.slow_next(1.5)
    first = await (await api.post("/api/sync", json={})).json()

    response = await api.post("/api/sync", json={"spaces": ["ENG"], "force": True})
    assert response.status == 409
    busy = await response.json()
    assert_error(busy, 409)
    assert busy["run_id"] == first["run_id"] and busy["requested_by"] == "api" and busy["started_at"]
    assert f"sync #{first['run_id']} is already running" in busy["error"]

    assert (await wait_done(api, first["run_id"]))["status"] == "succeeded"


async def test_quick_start_sync_waits_for_the_running_sync_then_runs_and_answers_complete(
    api: Client, confluence: Any
) -> None:
    ids = add_samples(confluence)
    confluence.slow_next(1.0)  # the start-up sync, still running when the Quick Start's curl arrives
    first = await (await api.post("/api/sync", json={})).json()

    response = await api.post("/api/sync", json={"space_keys": ["ENG"], "force": True})
    assert response.status == 200
    done = await response.json()
    assert done["status"] == "complete" and done["run_id"] > first["run_id"]
    assert (done["synced"], done["skipped"], done["failed"]) == (len(ids), 0, 0)  # forced: every page again
    assert (await wait_done(api, first["run_id"]))["status"] == "succeeded"


async def test_quick_start_sync_gives_up_waiting_with_a_clear_answer(
    services: Services, confluence: Any
) -> None:
    add_samples(confluence)
    confluence.slow_next(3.0)
    client: Client = TestClient(TestServer(build_api(services, sync_wait_s=0.5)))
    await client.start_server()
    try:
        first = await (await client.post("/api/sync", json={})).json()
        started = time.monotonic()
        response = await client.post("/api/sync", json={"space_keys": ["ENG"], "force": False})
        assert response.status == 409 and time.monotonic() - started < 2.5
        busy = await response.json()
        assert_error(busy, 409)
        assert busy["run_id"] == first["run_id"]
        assert busy["error"].endswith("still running after waiting 0.5 s, try again later")
        assert (await wait_done(client, first["run_id"]))["status"] == "succeeded"
    finally:
        await client.close()


async def test_fastapi_tutorial_sync_shape_answers_when_complete(api: Client, confluence: Any) -> None:
    ids = add_samples(confluence)
    broken = ids["Staging Environment"]
    confluence.fail_next(status=400, path_contains=f"/pages/{broken}?")

    response = await api.post("/api/sync", json={"space_keys": ["ENG"], "force": False})
    assert response.status == 200
    done = await response.json()
    # "complete" even with a failed page: an existing scheduler alerts on failed > 0.
    assert done["status"] == "complete" and done["run_status"] == "partial"
    assert (done["synced"], done["failed"]) == (done["pages_added"], 1)
    assert done["synced"] + done["skipped"] + done["failed"] == len(ids)
    assert done["failures"][0]["page_id"] == broken
    run = await wait_done(api, done["run_id"])
    assert run["status"] == "partial" and run["failures"][0]["page_id"] == broken

    # `space_keys: null` is still the tutorial's shape (configured spaces); the failed page comes back.
    retried = await (await api.post("/api/sync", json={"space_keys": None, "force": False})).json()
    assert retried["status"] == "complete" and retried["run_status"] == "succeeded"
    assert (retried["synced"], retried["failed"], retried["skipped"]) == (1, 0, len(ids) - 1)

    again = await (await api.post("/api/sync?wait=true")).json()
    assert again["status"] == "complete" and again["run_status"] == "succeeded"
    assert (again["synced"], again["failed"], again["skipped"]) == (0, 0, len(ids))


async def test_tutorial_sync_that_fails_outright_is_an_error_not_complete(
    make_settings: MakeSettings, confluence: Any
) -> None:
    add_samples(confluence)
    wrong_token = "wrong-confluence-token-31337"
    async with build_services(make_settings(confluence_api_token=wrong_token)) as services:
        client = await client_for(services)
        try:
            response = await client.post("/api/sync", json={"space_keys": ["ENG"], "force": False})
            body = await response.json()
        finally:
            await client.close()
    assert response.status == 502
    assert_error(body, 502)
    assert body["error"].startswith(f"sync #{body['run_id']} failed") and "ENG" in body["error"]
    assert wrong_token not in str(body)
