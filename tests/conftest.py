"""Shared fixtures: one embedded Postgres per test run, a fresh migrated database per test."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from db.connect import Database, open_database
from db.embedded import EmbeddedPostgres
from db.migrate import apply_migrations

# Tests talk to servers on 127.0.0.1; slack_sdk honours proxy variables and ignores NO_PROXY.
for _var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_var, None)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TEMPLATE_DB = "askdocs_template"
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


@pytest.fixture
async def database_dsn(pg_server: EmbeddedPostgres) -> str:
    """A fresh database cloned from the migrated template (not yet bound to an embedding model)."""
    name = f"test_{os.getpid()}_{next(_database_numbers)}"
    admin = await asyncpg.connect(pg_server.admin_dsn())
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    finally:
        await admin.close()
    return _dsn_for(pg_server, name)


@pytest.fixture
async def database(database_dsn: str, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated database bound to a 384-dimension test embedding model."""
    db = await open_database(
        database_dsn, data_dir=tmp_path, embedding_model="emulator-384", embedding_dimension=384
    )
    yield db
    await db.close()
