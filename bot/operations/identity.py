"""Who is asking, in Confluence's terms (issue 15): an email → the Confluence account with that email → the
audience whose pages an answer may use, when CONFLUENCE_PERMISSIONS=per-user.

The accounts and their emails come from the permission refresh (members of every group that grants or
restricts reading, and every user named directly), so a lookup costs one indexed query, cached for `ttl_s`.
No match → the organisation-wide audience. Emails are logged at DEBUG only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import asyncpg

from db import access
from db.models import Audience

logger = logging.getLogger(__name__)


class Identity:
    """Email → Audience. In public mode every audience is None (no permission filter at all)."""

    def __init__(
        self, pool: asyncpg.Pool, *, per_user: bool, ttl_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._per_user = per_user
        self._ttl_s = ttl_s
        self._clock = clock
        self._accounts: dict[str, tuple[float, str | None]] = {}

    @property
    def per_user(self) -> bool:
        return self._per_user

    def organisation(self) -> Audience | None:
        """Everyone in the organisation (a channel, an API call without as_user); None in public mode."""
        return Audience(None) if self._per_user else None

    async def for_email(self, email: str | None) -> Audience | None:
        """The audience of the person with this email: their own Confluence access, or the organisation's."""
        if not self._per_user:
            return None
        if not email:
            return Audience(None)
        return Audience(await self.account_for_email(email))

    async def account_for_email(self, email: str) -> str | None:
        key = email.strip().lower()
        now = self._clock()
        cached = self._accounts.get(key)
        if cached is not None and now - cached[0] < self._ttl_s:
            return cached[1]
        async with self._pool.acquire() as conn:
            account = await access.account_by_email(conn, key)
        self._accounts[key] = (now, account)
        logger.debug("email %s → Confluence account %s", key, account or "none")
        if account is None:
            logger.info("an asker has no (unambiguous) Confluence account: organisation-wide pages only")
        return account
