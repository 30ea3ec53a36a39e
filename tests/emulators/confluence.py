"""ConfluenceEmulator: the demo's SampleConfluence plus fault injection, for driving the real client in tests.

Faults: status codes (with Retry-After), truncated JSON, connections reset mid-body, slow answers, listings
that fail past an offset. Each applies to the next n requests whose path contains a given string.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiohttp import web

from bot.demo.confluence import EmulatedPage, EmulatedSpace, Handler, SampleConfluence, _error
from tests.emulators.ratelimit import AccountWindow

__all__ = ["ConfluenceEmulator", "EmulatedPage", "EmulatedSpace"]


@dataclass
class _Fault:
    kind: str  # "status" | "truncate" | "reset" | "slow"
    remaining: int
    path_contains: str | None
    status: int = 500
    retry_after: str | None = None
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class ConfluenceEmulator(SampleConfluence):
    """A Confluence site in memory; edit its state, inject faults, read what was asked."""

    def __init__(self, *, email: str = "demo@example.com", api_token: str = "demo-token",
                 pat: str | None = None) -> None:
        super().__init__(email=email, api_token=api_token, pat=pat)
        self._faults: list[_Fault] = []
        self._listing_fail_after: int | None = None
        self.account_window: AccountWindow | None = None  # enforce_rate_limit() sets it
        self.arrivals: list[float] = []  # time.monotonic() of each request, for pacing checks
        self.peers: list[object] = []  # client address of each request: were connections reused?
        self._near_limit_left = 0

    # ---- faults and records -------------------------------------------------------------------------

    def fail_next(
        self, n: int = 1, *, status: int = 500, retry_after: float | str | None = None,
        path_contains: str | None = None, headers: dict[str, str] | None = None,
    ) -> None:
        """The next n matching requests answer `status` (with Retry-After and `headers` when given)."""
        header = None if retry_after is None else str(retry_after)
        self._faults.append(
            _Fault("status", n, path_contains, status=status, retry_after=header, headers=dict(headers or {}))
        )

    def enforce_rate_limit(
        self, *, window_s: float, reject_fraction: float = 0.0, grace_s: float = 0.05,
        retry_after_header: bool = True, seed: int = 16,
    ) -> AccountWindow:
        """Reject the whole account while a 429 window is open, as Atlassian does, and count violations.

        `reject_fraction` of requests open a window of `window_s`; an injected status fault with Retry-After
        (e.g. a 503 burst) opens one too.
        """
        self.account_window = AccountWindow(
            window_s, reject_fraction=reject_fraction, grace_s=grace_s, retry_after_header=retry_after_header,
            seed=seed,
        )
        return self.account_window

    def near_limit_next(self, n: int) -> None:
        """The next n served responses carry `X-RateLimit-NearLimit: true` (under 20% of the budget left)."""
        self._near_limit_left = n

    def truncate_next(self, n: int = 1, *, path_contains: str | None = None) -> None:
        """The next n matching requests get 200 with only the first half of their JSON body."""
        self._faults.append(_Fault("truncate", n, path_contains))

    def reset_next(self, n: int = 1, *, path_contains: str | None = None) -> None:
        """The next n matching requests see the connection closed halfway through the body."""
        self._faults.append(_Fault("reset", n, path_contains))

    def slow_next(self, delay_s: float, n: int = 1, *, path_contains: str | None = None) -> None:
        """The next n matching requests are answered after `delay_s` seconds."""
        self._faults.append(_Fault("slow", n, path_contains, delay_s=delay_s))

    def fail_listing_after(self, pages: int | None) -> None:
        """Listing requests starting at or past `pages` results answer 500 persistently (None: stop)."""
        self._listing_fail_after = pages

    def clear_faults(self) -> None:
        self._faults.clear()
        self._listing_fail_after = None

    def _take_fault(self, request: web.Request) -> _Fault | None:
        for fault in self._faults:
            if fault.path_contains is None or fault.path_contains in request.path_qs:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _listing_fails(self, offset: int) -> bool:
        return self._listing_fail_after is not None and offset >= self._listing_fail_after

    async def _respond(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.arrivals.append(time.monotonic())
        self.peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        window = self.account_window
        if window is not None and (limited := window.reject_if_open()) is not None:
            return _error(429, "Rate limit exceeded", limited)
        fault = self._take_fault(request)
        if fault is not None and fault.kind == "slow":
            await asyncio.sleep(fault.delay_s)
        if fault is not None and fault.kind == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            if window is not None and fault.retry_after is not None:
                window.open(float(fault.retry_after))
            if fault.status == 429 and not request.path.startswith("/wiki/"):
                headers.update({"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0",
                                "X-RateLimit-Interval-Seconds": "1", "X-RateLimit-FillRate": "2"})
            headers.update(fault.headers)
            return _error(fault.status, "Injected failure", headers)
        if window is not None and fault is None and (limited := window.roll()) is not None:
            return _error(429, "Rate limit exceeded", limited)
        response = await super()._respond(request, handler)
        if self._near_limit_left > 0 and response.status < 400:
            self._near_limit_left -= 1
            response.headers["X-RateLimit-NearLimit"] = "true"
        broken = fault is not None and fault.kind in ("truncate", "reset")
        if fault is not None and broken and isinstance(response, web.Response) and response.status != 401:
            return await self._break(request, response, reset=fault.kind == "reset")
        return response

    async def _break(
        self, request: web.Request, response: web.Response, *, reset: bool
    ) -> web.StreamResponse:
        body = response.body if isinstance(response.body, bytes) else b""
        half = body[: len(body) // 2]
        if not reset:
            return web.Response(body=half, status=response.status, content_type="application/json")
        stream = web.StreamResponse(status=response.status, headers={"Content-Type": "application/json"})
        stream.content_length = len(body)
        await stream.prepare(request)
        await stream.write(half)
        if request.transport is not None:
            request.transport.close()
        return stream
