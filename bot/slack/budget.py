"""One rate budget per Slack method per workspace, shared by every answer and /docsync progress.

Why (issue 17): Slack's rate tiers apply per method per app per workspace — `chat.update` is Tier 3 (~50 a
minute) for every message the app edits there, `chat.appendStream` Tier 4 (~100 a minute). Without a shared
budget, 3–4 answers at once (or one during a /docsync) got 429s and the SDK's retry handler slept inside the
model's token loop. Here intermediate writes (a streamed append, a progress edit) ask `try_take` and are
skipped when the window is full; final writes call `take_final`, which never refuses but counts, so the
intermediate writes after it hold back instead.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping

# Slack's published tiers for the methods askdocs writes with (docs.slack.dev, rate limits): calls a minute.
SLACK_LIMITS_PER_MINUTE: Mapping[str, float] = {
    "chat.update": 50,  # Tier 3
    "chat.appendStream": 100,  # Tier 4
}
# Intermediate writes leave this share of each window to final writes, so a burst of edits can't starve them.
FINAL_RESERVE = 0.2


class RateBudget:
    """Per (workspace, method): at most the method's limit of writes in any `window_s`; unlisted methods are
    never throttled. A sliding window, the strictest reading of "50 a minute", so no burst overshoots it.

    `window_s` is the length of Slack's minute: tests shrink it (with the emulator's) to run fast.
    """

    def __init__(
        self, limits_per_window: Mapping[str, float] = SLACK_LIMITS_PER_MINUTE, *, window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = dict(limits_per_window)
        self._window_s = window_s
        self._clock = clock
        self._writes: dict[tuple[str, str], deque[float]] = {}
        self._blocked_until: dict[tuple[str, str], float] = {}
        self.dropped = 0  # intermediate writes skipped for want of budget (bench and logs)

    @property
    def window_s(self) -> float:
        return self._window_s

    def try_take(self, team_id: str | None, method: str) -> bool:
        """For an intermediate write: allowed while the window has room above the final writes' reserve."""
        writes = self._window(team_id, method)
        if writes is None:
            return True
        key = (team_id or "-", method)
        if (len(writes) >= self._limits[method] * (1 - FINAL_RESERVE)
                or self._clock() < self._blocked_until.get(key, 0.0)):
            self.dropped += 1
            return False
        writes.append(self._clock())
        return True

    def take_final(self, team_id: str | None, method: str) -> None:
        """For a final write: always allowed, and counted, so the intermediate writes after it hold back."""
        writes = self._window(team_id, method)
        if writes is not None:
            writes.append(self._clock())

    def exhaust(self, team_id: str | None, method: str, *, retry_after_s: float) -> None:
        """Slack said 429 (another process may share the quota): nothing intermediate for `retry_after_s`."""
        if method in self._limits:
            self._blocked_until[(team_id or "-", method)] = self._clock() + retry_after_s

    def _window(self, team_id: str | None, method: str) -> deque[float] | None:
        if method not in self._limits:
            return None
        writes = self._writes.setdefault((team_id or "-", method), deque())
        horizon = self._clock() - self._window_s
        while writes and writes[0] <= horizon:
            writes.popleft()
        return writes
