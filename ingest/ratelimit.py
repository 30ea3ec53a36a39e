"""One rate-limit state per Confluence client: every worker waits out a 429/503 window together.

Atlassian rejects the whole account while a 429 window is open (GUIDE, Confluence Cloud): a Retry-After that
only the rejected request honours lets the other workers fire into the window, and each of those requests is
rejected again (issue 16: 149 requests inside open windows, 8 pages lost in a 161-page sync). So a response that
opens a window closes the gate for every request of the client until the window ends.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from ingest.errors import ConfluenceBlocked

# Responses whose Retry-After (or X-RateLimit-Reset) describes an account-wide window. Some servers answer 403
# instead of 429 under rate limiting; a 503 with Retry-After means a resource limit (Atlassian, rate limiting).
WINDOW_STATUSES = frozenset({403, 429, 503})


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def parse_reset(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds until an `X-RateLimit-Reset` moment (ISO 8601, Atlassian sends `yyyy-MM-ddTHH:mmZ`); None when
    absent or unreadable."""
    if value is None or not value.strip():
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def window_seconds(headers: Mapping[str, str]) -> float | None:
    """How long the server asks every request to wait: Retry-After, else X-RateLimit-Reset; None: no window."""
    seconds = parse_retry_after(headers.get("Retry-After"))
    return seconds if seconds is not None else parse_reset(headers.get("X-RateLimit-Reset"))


class RateLimitGate:
    """The account's rate-limit state, shared by all requests of one client.

    `turn()` around each request; `observe()` on each response. Waits are bounded by `max_wait_s` (tests
    shrink it); a window longer than `blocked_after_s`, or `X-RateLimit-Limit: 0`, raises ConfluenceBlocked at
    once instead of sleeping for minutes. While responses carry `X-RateLimit-NearLimit: true`, requests start
    at most one per `near_limit_interval_s`.
    """

    def __init__(
        self, *, max_wait_s: float, blocked_after_s: float, near_limit_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_wait_s = max_wait_s
        self._blocked_after_s = blocked_after_s
        self._near_limit_interval_s = near_limit_interval_s
        self._clock = clock
        self._open_until = 0.0
        self._near_limit = False
        self._next_start = 0.0
        self._after_window = False  # the next request probes whether the window really ended
        self._probe_done: asyncio.Event | None = None
        self.windows_seen = 0

    @property
    def slowed_down(self) -> bool:
        return self._near_limit

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold this around one request: it starts when no window is open, spaced out while near the limit.

        After a window the first request goes alone, as a probe: the others start once its answer is known, so
        a window it reopens costs one request, not one per worker (they would all land inside it).
        """
        await self._wait()
        probe = self._after_window
        if probe:
            self._after_window = False
            self._probe_done = asyncio.Event()
        try:
            yield
        finally:
            if probe and self._probe_done is not None:
                self._probe_done.set()

    async def _wait(self) -> None:
        while True:
            now = self._clock()
            wait = self._open_until - now
            if self._near_limit:
                wait = max(wait, self._next_start - now)
            if wait > 0:
                await asyncio.sleep(wait)
            elif self._probe_done is not None and not self._probe_done.is_set():
                await self._probe_done.wait()
            else:
                break
        if self._near_limit:  # no await since the check: the next waiter sees this start
            self._next_start = self._clock() + self._near_limit_interval_s

    def observe(self, status: int, headers: Mapping[str, str], url: str) -> float | None:
        """Learn from a response; returns the window it opened in seconds (as sent), None when it opened none.

        Raises ConfluenceBlocked when the account may not make requests for longer than we are willing to wait.
        """
        self._near_limit = headers.get("X-RateLimit-NearLimit", "").strip().lower() == "true"
        if status not in WINDOW_STATUSES:
            return None
        if headers.get("X-RateLimit-Limit", "").strip() == "0":
            raise ConfluenceBlocked(
                status, url, "Confluence allows this account no requests (X-RateLimit-Limit: 0): an admin must "
                "lift the block or raise the limit for this user before askdocs can sync",
            )
        seconds = window_seconds(headers)
        if seconds is None:
            return None
        if seconds > self._blocked_after_s:
            shown = f"{seconds:.0f} s" if seconds < 10**9 else "practically forever"
            raise ConfluenceBlocked(
                status, url, f"Confluence answered {status} and asks to wait {shown}, longer than askdocs waits "
                f"({self._blocked_after_s:.0f} s): the account is blocked or over its quota; try again later",
                seconds,
            )
        self.windows_seen += 1
        self._after_window = True
        self._open_until = max(self._open_until, self._clock() + min(seconds, self._max_wait_s))
        return seconds
