"""An account-wide rate-limit window as Atlassian enforces it, for the Confluence emulator.

While a window is open every request of the account is rejected with 429 and the time left, and a request that
arrives more than `grace_s` after the window opened counts as a violation: it was sent by a client that had
already been told to wait (`grace_s` excuses requests that were on the wire when the window opened).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta


@dataclass
class AccountWindow:
    """Rejects a fraction of requests with a window of `window_s` seconds and counts requests sent into one."""

    window_s: float
    reject_fraction: float = 0.0
    grace_s: float = 0.05
    retry_after_header: bool = True  # False: only X-RateLimit-Reset says when the window ends
    seed: int = 16
    violations: int = 0
    windows_opened: int = 0
    rejected: int = 0
    _opened_at: float = 0.0
    _open_until: float = 0.0
    _random: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def open(self, seconds: float) -> None:
        now = time.monotonic()
        if not self.is_open():
            self._opened_at = now
            self.windows_opened += 1
        self._open_until = max(self._open_until, now + seconds)

    def reject_if_open(self) -> dict[str, str] | None:
        """The 429's headers when a window is open (counting a violation past the grace), else None."""
        if not self.is_open():
            return None
        if time.monotonic() - self._opened_at > self.grace_s:
            self.violations += 1
        self.rejected += 1
        return self.headers()

    def roll(self) -> dict[str, str] | None:
        """Open a window for `reject_fraction` of the requests; the 429's headers when this one opened it."""
        if self._random.random() >= self.reject_fraction:
            return None
        self.open(self.window_s)
        self.rejected += 1
        return self.headers()

    def headers(self) -> dict[str, str]:
        """Retry-After (the time left, as decimal seconds so tests stay fast) and X-RateLimit-Reset."""
        left = max(0.0, self._open_until - time.monotonic())
        reset = datetime.now(UTC) + timedelta(seconds=left)
        headers = {"X-RateLimit-Reset": reset.isoformat(timespec="milliseconds").replace("+00:00", "Z")}
        if self.retry_after_header:
            headers["Retry-After"] = f"{left:.3f}"
        return headers
