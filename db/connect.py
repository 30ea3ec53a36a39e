"""Open the knowledge base: embedded or external Postgres, migrated, bound to an embedding model."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from db.embedded import EmbeddedPostgres
from db.errors import DatabaseError, EmbeddingModelMismatch
from db.migrate import apply_migrations, bind_embedding_model, reset_embeddings
from db.pool import open_pool

logger = logging.getLogger(__name__)


@dataclass
class Database:
    """A migrated database and its pool; `close()` also detaches from the embedded server."""

    pool: asyncpg.Pool
    dsn: str
    embedded: EmbeddedPostgres | None = None

    async def close(self) -> None:
        await self.pool.close()
        if self.embedded is not None:
            await self.embedded.stop()


def describe_dsn(dsn: str) -> str:
    """Where a DSN points, without its password (for messages and logs)."""
    parts = urlsplit(dsn)
    host = parts.hostname or "local socket"
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path or ''}"


async def open_database(
    dsn: str | None,
    *,
    data_dir: Path,
    embedding_model: str | None = None,
    embedding_dimension: int | None = None,
    max_connections: int = 10,
    reembed_on_model_change: bool = False,
) -> Database:
    """Start/attach the embedded server when `dsn` is None, migrate, bind the model, open the pool.

    A knowledge base built with another embedding model is an error, unless `reembed_on_model_change`: then
    its embeddings are dropped (pages stay, their checksums cleared) and the next sync embeds every page with
    the configured model. Vectors of two models are never mixed.
    """
    embedded = None
    if dsn is None:
        embedded = EmbeddedPostgres(data_dir)
        try:
            dsn = await embedded.start()
        except Exception as error:
            raise DatabaseError(f"could not start the embedded database in {data_dir}: {error}") from error
    try:
        conn = await asyncpg.connect(dsn, timeout=15)
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        if embedded is not None:
            await embedded.stop()
        raise DatabaseError(
            f"cannot connect to the database at {describe_dsn(dsn)}: {type(error).__name__}: {error}"
        ) from None
    except ValueError as error:  # a malformed DSN (asyncpg's ClientConfigurationError is a ValueError too)
        raise DatabaseError(f"DATABASE_URL is not a usable PostgreSQL URL: {error}") from None
    try:
        await apply_migrations(conn)
        if embedding_model is not None and embedding_dimension is not None:
            try:
                await bind_embedding_model(conn, model=embedding_model, dimension=embedding_dimension)
            except EmbeddingModelMismatch as changed:
                if not reembed_on_model_change:
                    raise
                removed = await reset_embeddings(conn)
                await bind_embedding_model(conn, model=embedding_model, dimension=embedding_dimension)
                logger.warning(
                    "the knowledge base was built with %s (%d dimensions); EMBEDDING_MODEL is %s: dropped %d "
                    "chunks, the next sync re-embeds every page", changed.stored_model, changed.stored_dimension,
                    embedding_model, removed,
                )
    except BaseException:
        await conn.close()
        if embedded is not None:
            await embedded.stop()
        raise
    await conn.close()
    pool = await open_pool(dsn, max_size=max_connections)
    return Database(pool=pool, dsn=dsn, embedded=embedded)
