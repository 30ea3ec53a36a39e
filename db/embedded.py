"""The embedded PostgreSQL + pgvector server used when DATABASE_URL is unset.

pgserver keeps a list of the processes attached to a data directory under an inter-process lock: the first
`askdocs` process starts the server, later ones attach to it, and the last one to leave stops it.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DATABASE_NAME = "askdocs"


@dataclass
class EmbeddedPostgres:
    """A handle on the embedded server for one data directory."""

    data_dir: Path
    _server: Any = None

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    async def start(self) -> str:
        """Start (or attach to) the server and return a DSN for the askdocs database."""
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._server = await asyncio.to_thread(_get_server, self.pgdata)
        dsn = await asyncio.to_thread(_ensure_database, self._server, DATABASE_NAME)
        logger.info("embedded postgres ready in %s", self.pgdata)
        return dsn

    def admin_dsn(self) -> str:
        if self._server is None:
            raise RuntimeError("embedded postgres is not started")
        return str(self._server.get_uri())

    async def stop(self) -> None:
        """Detach; the server stops when the last attached process leaves."""
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.to_thread(server.cleanup)


def _get_server(pgdata: Path) -> Any:
    # pgserver warns when XDG_RUNTIME_DIR is unset (containers, CI) and falls back to /tmp: harmless.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pgserver  # imported here: importing it locates binaries on disk

        return pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]


def _ensure_database(server: Any, name: str) -> str:
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}';")
    if "(1 row)" not in exists:
        result = server.psql(f"CREATE DATABASE {name};")
        # Two processes may race here; the loser sees "already exists", which is fine.
        if "ERROR" in result and "already exists" not in result:
            raise RuntimeError(f"could not create the embedded database: {result.strip()}")
    return str(server.get_uri(name))
