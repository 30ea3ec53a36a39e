"""Shared fixtures: one embedded Postgres per test run, a fresh migrated database per test."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from db.connect import Database, open_database
from db.embedded import EmbeddedPostgres
from db.migrate import apply_migrations
from ingest.confluence import RetryPolicy

# Tests talk to servers on 127.0.0.1; slack_sdk honours proxy variables and ignores NO_PROXY.
for _var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_var, None)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TEMPLATE_DB = "askdocs_template"


def pytest_configure(config: pytest.Config) -> None:
    # pytest keeps only its three newest /tmp/pytest-of-<user>/pytest-N folders, so parallel runs (several
    # developers on one machine) delete each other's embedded database mid-run. One private folder per run.
    if config.option.basetemp is None:
        config.option.basetemp = tempfile.mkdtemp(prefix="askdocs-pytest-")
        config.add_cleanup(lambda: shutil.rmtree(config.option.basetemp, ignore_errors=True))
_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
async def pg_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"))
    await server.start()
    admin = await asyncpg.connect(server.admin_dsn())
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")
        await admin.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    finally:
        await admin.close()
    template = await asyncpg.connect(_dsn_for(server, TEMPLATE_DB))
    try:
        await apply_migrations(template)
    finally:
        await template.close()
    yield server
    await server.stop()


def _dsn_for(server: EmbeddedPostgres, name: str) -> str:
    admin = server.admin_dsn()
    base, _, query = admin.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}?{query}"


async def clone_template(server: EmbeddedPostgres, name: str) -> str:
    """A new database `name` cloned from the migrated template; returns its DSN (for module-scoped stacks)."""
    admin = await asyncpg.connect(server.admin_dsn())
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    finally:
        await admin.close()
    return _dsn_for(server, name)


@pytest.fixture
async def database_dsn(pg_server: EmbeddedPostgres) -> str:
    """A fresh database cloned from the migrated template (not yet bound to an embedding model)."""
    return await clone_template(pg_server, f"test_{os.getpid()}_{next(_database_numbers)}")


@pytest.fixture
async def database(database_dsn: str, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated database bound to a 384-dimension test embedding model."""
    db = await open_database(
        database_dsn, data_dir=tmp_path, embedding_model="emulator-384", embedding_dimension=384
    )
    yield db
    await db.close()


# ---- emulators and the real service graph ---------------------------------------------------------------

EMULATOR_EMBEDDING_MODEL = "emulator-embedding"
# The production retry policy with waits shrunk: same attempts and Retry-After handling, seconds → milliseconds.
FAST_RETRY = RetryPolicy(attempts=6, base_delay_s=0.01, max_delay_s=0.1, max_retry_after_s=2.0)


@pytest.fixture
async def confluence() -> AsyncIterator[ConfluenceEmulator]:
    from tests.emulators.confluence import ConfluenceEmulator

    async with ConfluenceEmulator(email="bot@example.com", api_token="confluence-secret-token") as emulator:
        yield emulator


@pytest.fixture
async def openai_emulator() -> AsyncIterator[OpenAIEmulator]:
    from tests.emulators.openai import OpenAIEmulator

    async with OpenAIEmulator(api_key="sk-test-secret-key", embedding_dimension=384) as emulator:
        yield emulator


@pytest.fixture
def make_settings(database_dsn: str, tmp_path: Path, confluence, openai_emulator):  # type: ignore[no-untyped-def]
    """Settings for the real service graph against the emulators; keyword overrides win."""
    from bot.settings import load_settings

    def build(**overrides: object):  # type: ignore[no-untyped-def]
        values: dict[str, object] = {
            "database_url": database_dsn,
            "askdocs_data_dir": tmp_path / "data",
            "confluence_base_url": confluence.base_url,
            "confluence_email": "bot@example.com",
            "confluence_api_token": "confluence-secret-token",
            "confluence_spaces": ["ENG"],
            "openai_api_key": "sk-test-secret-key",
            "openai_base_url": openai_emulator.base_url,
            "embedding_provider": "openai",
            "embedding_model": EMULATOR_EMBEDDING_MODEL,
            "llm_provider": "none",
        }
        values.update(overrides)
        return load_settings(None, **values)

    return build


@pytest.fixture
async def services(make_settings):  # type: ignore[no-untyped-def]
    """The real service graph (extractive answers) against the emulators and a fresh database."""
    from bot.services import build_services

    async with build_services(make_settings(), confluence_retry=FAST_RETRY) as built:
        yield built


if False:  # pragma: no cover - names for type checkers only
    from tests.emulators.confluence import ConfluenceEmulator
    from tests.emulators.openai import OpenAIEmulator
