"""Knowledge-base status: the one snapshot `askdocs status`, the App Home tab, /healthz, /metrics and the
scheduler read."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from db import activity, runs
from db.models import SyncRun


@dataclass(frozen=True)
class SpaceStatus:
    space_key: str
    name: str | None
    pages: int
    chunks: int
    last_synced_at: datetime | None
    blogposts: int = 0
    comments: int = 0
    attachments: int = 0  # files indexed (skipped and failed ones not counted)


@dataclass(frozen=True)
class KnowledgeBaseStatus:
    spaces: list[SpaceStatus]
    embedding_model: str | None
    embedding_dimension: int | None
    configured_embedding_model: str
    last_sync: SyncRun | None
    running_sync: SyncRun | None
    last_success: SyncRun | None
    questions_answered: int
    next_sync_at: datetime | None = None
    configured_spaces: list[str] = field(default_factory=list)

    @property
    def pages(self) -> int:
        return sum(s.pages for s in self.spaces)

    @property
    def chunks(self) -> int:
        return sum(s.chunks for s in self.spaces)

    def to_json(self) -> dict[str, Any]:
        def run_json(run: SyncRun | None) -> dict[str, Any] | None:
            if run is None:
                return None
            data = asdict(run)
            data["spaces"] = list(run.spaces)
            for key in ("started_at", "finished_at"):
                data[key] = data[key].isoformat() if data[key] else None
            return data

        return {
            "spaces": [
                {**asdict(s), "last_synced_at": s.last_synced_at.isoformat() if s.last_synced_at else None}
                for s in self.spaces
            ],
            "totals": {"pages": self.pages, "chunks": self.chunks,
                       "blogposts": sum(s.blogposts for s in self.spaces),
                       "comments": sum(s.comments for s in self.spaces),
                       "attachments": sum(s.attachments for s in self.spaces)},
            "configured_spaces": self.configured_spaces,
            "embedding": {
                "model": self.embedding_model,
                "dimension": self.embedding_dimension,
                "configured_model": self.configured_embedding_model,
            },
            "last_sync": run_json(self.last_sync),
            "running_sync": run_json(self.running_sync),
            "next_sync_at": self.next_sync_at.isoformat() if self.next_sync_at else None,
            "questions_answered": self.questions_answered,
        }


async def read_status(
    pool: asyncpg.Pool, *, configured_model: str = "", configured_spaces: Sequence[str] = (),
    next_sync_at: datetime | None = None, timeout_s: float | None = None,
) -> KnowledgeBaseStatus:
    """One consistent read; with `timeout_s`, TimeoutError when the database is slow (health checks)."""
    async with asyncio.timeout(timeout_s), pool.acquire() as conn:
        spaces = [
            SpaceStatus(
                space_key=row["space_key"], name=row["name"], pages=row["pages"], chunks=row["chunks"],
                last_synced_at=row["last_synced_at"], blogposts=row["blogposts"], comments=row["comments"],
                attachments=row["attachments"],
            )
            for row in await activity.space_counts(conn)
        ]
        config = await activity.embedding_config(conn)
        return KnowledgeBaseStatus(
            spaces=spaces,
            embedding_model=config["model"] if config else None,
            embedding_dimension=config["dimension"] if config else None,
            configured_embedding_model=configured_model,
            last_sync=await runs.last_run(conn),
            running_sync=await runs.running_run(conn),
            last_success=await runs.last_successful_run(conn),
            questions_answered=await activity.query_count(conn),
            next_sync_at=next_sync_at,
            configured_spaces=list(configured_spaces),
        )
