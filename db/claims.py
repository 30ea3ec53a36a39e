"""Named queries for claims: work that exactly one replica on this database may do (issue 16)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

CLAIM_ONCE = "INSERT INTO claims (claim) VALUES ($1) ON CONFLICT (claim) DO NOTHING RETURNING claim"
PRUNE_CLAIMS = "DELETE FROM claims WHERE claimed_at < $1"


async def claim_once(conn: asyncpg.Connection, claim: str) -> bool:
    """True for the first caller of this claim on the database, False for every later one (any replica)."""
    return await conn.fetchval(CLAIM_ONCE, claim) is not None


async def prune_claims(conn: asyncpg.Connection, *, before: datetime) -> int:
    """Forget claims made before `before`; returns how many."""
    status = await conn.execute(PRUNE_CLAIMS, before)
    return int(status.split()[-1])
