"""Numbered SQL migrations, applied once each in a transaction under an advisory lock.

The lock matters even for `CREATE EXTENSION IF NOT EXISTS`: two processes running it at the same moment make one
fail with a unique violation on pg_extension_name_index.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from db.errors import DatabaseError, EmbeddingModelMismatch

logger = logging.getLogger(__name__)

HNSW_MAX_DIMENSIONS = 2000  # pgvector: HNSW indexes `vector` columns of up to 2,000 dimensions
MIGRATION_LOCK_KEY = 0x61736B646F6373  # "askdocs" in hex: one key for every askdocs process on a database
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")

CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
APPLIED_VERSIONS = "SELECT version FROM schema_migrations"
RECORD_MIGRATION = "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)"
READ_EMBEDDING_CONFIG = "SELECT model, dimension FROM embedding_config"
WRITE_EMBEDDING_CONFIG = "INSERT INTO embedding_config (model, dimension) VALUES ($1, $2)"
DELETE_EMBEDDING_CONFIG = "DELETE FROM embedding_config"
DELETE_ALL_CHUNKS = "DELETE FROM chunks"
# Filled chunks can't change dimension; the column is re-typed only while chunks is empty.
DROP_VECTOR_INDEX = "DROP INDEX IF EXISTS chunks_embedding_hnsw_idx"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """The migrations shipped in db/migrations, in order."""
    folder = resources.files("db") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Apply what is missing; returns the names applied (empty when up to date)."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(CREATE_MIGRATIONS_TABLE)
        done = {row["version"] for row in await conn.fetch(APPLIED_VERSIONS)}
        for migration in load_migrations():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(RECORD_MIGRATION, migration.version, migration.name)
            logger.info("applied migration %s", migration.name)
            applied.append(migration.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied


def _vector_ddl(dimension: int) -> list[str]:
    # The dimension is an int we validated, never user text; DDL can't take it as a $n parameter.
    if not 0 < dimension <= HNSW_MAX_DIMENSIONS:
        raise DatabaseError(
            f"embedding dimension {dimension} is more than pgvector's HNSW index takes ({HNSW_MAX_DIMENSIONS}): "
            "use a smaller model, e.g. EMBEDDING_MODEL=text-embedding-3-small (1536)"
        )
    return [
        DROP_VECTOR_INDEX,
        f"ALTER TABLE chunks ALTER COLUMN embedding TYPE vector({dimension})",
        # Cosine HNSW; pgvector's defaults m=16, ef_construction=64 are a good speed/recall balance.
        "CREATE INDEX chunks_embedding_hnsw_idx ON chunks USING hnsw (embedding vector_cosine_ops)",
    ]


async def bind_embedding_model(conn: asyncpg.Connection, *, model: str, dimension: int) -> None:
    """Record the embedding model on first use; refuse a different one later with an error naming the fix."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        row = await conn.fetchrow(READ_EMBEDDING_CONFIG)
        if row is not None:
            if row["model"] != model or row["dimension"] != dimension:
                raise EmbeddingModelMismatch(
                    stored_model=row["model"], stored_dimension=row["dimension"],
                    model=model, dimension=dimension,
                )
            return
        async with conn.transaction():
            for statement in _vector_ddl(dimension):
                await conn.execute(statement)
            await conn.execute(WRITE_EMBEDDING_CONFIG, model, dimension)
        logger.info("knowledge base bound to %s (%d dimensions)", model, dimension)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def reset_embeddings(conn: asyncpg.Connection) -> int:
    """Forget the embedding model and every chunk, so another model can be bound; returns chunks removed."""
    async with conn.transaction():
        removed = await conn.fetchval("SELECT count(*) FROM chunks")
        await conn.execute(DELETE_ALL_CHUNKS)
        await conn.execute(DELETE_EMBEDDING_CONFIG)
        # Pages keep their rows but lose their checksum so the next sync re-embeds them.
        await conn.execute("UPDATE pages SET checksum = ''")
    return int(removed)
