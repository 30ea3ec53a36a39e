"""Errors raised while reading Confluence and building the index.

They carry the facts a caller needs to decide (status, url, Retry-After) and never credentials:
messages are built from status codes, URLs without user info and Confluence's short error text only.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def safe_url(url: str) -> str:
    """Return `url` without any `user:password@` part, so it can go into messages and logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


# Lines a database driver appends to its message (asyncpg: DETAIL, HINT…); they often hold row values.
_DRIVER_DETAIL = ("DETAIL:", "HINT:", "CONTEXT:", "QUERY:", "WHERE:")


def one_line(error: BaseException | str) -> str:
    """An error's text on one line, for people (CLI, API, Slack, run records): whatever the driver appends.

    asyncpg adds a `DETAIL:` line to some messages (a database dropped mid-answer, issue 16); the log keeps the
    whole error with its traceback.
    """
    lines = [line.strip() for line in str(error).splitlines()]
    kept = [line for line in lines if line and not line.startswith(_DRIVER_DETAIL)]
    return " ".join(kept) or (type(error).__name__ if isinstance(error, BaseException) else "")


class IngestError(Exception):
    """Base of everything the ingest package raises on purpose."""


class ConfluenceError(IngestError):
    """A Confluence request that failed: HTTP status (None when no usable response arrived) and URL.

    `retry_after` is the server's Retry-After in seconds as sent (unclamped); the retry policy clamps it.
    """

    def __init__(self, status: int | None, url: str, message: str, retry_after: float | None = None) -> None:
        self.status = status
        self.url = safe_url(url)
        self.message = message
        self.retry_after = retry_after
        shown = "no usable response" if status is None else f"HTTP {status}"
        super().__init__(f"{message} ({shown}, GET {self.url})")

    @property
    def retryable(self) -> bool:
        """Whether trying again may help: no/invalid response, 429, 5xx, or a 403 carrying Retry-After.

        Some Confluence servers answer 403 instead of 429 under rate limiting (they then send Retry-After).
        """
        if self.status is None or self.status == 429 or 500 <= self.status <= 599:
            return True
        return self.status == 403 and self.retry_after is not None


class ConfluenceBlocked(ConfluenceError):
    """The account may not make requests for longer than askdocs waits (`X-RateLimit-Limit: 0`, or a
    Retry-After/X-RateLimit-Reset past the policy's limit): retrying would only sleep, so it is never retried."""

    @property
    def retryable(self) -> bool:
        return False


class ConfluenceAuthError(ConfluenceError):
    """401: the email + API token (Cloud) or personal access token (Data Center) was refused."""


class PageForbidden(ConfluenceError):
    """403 on a page: the bot's account may not read it (page restrictions)."""


class ListingIncomplete(IngestError):
    """A space listing that could not be completed; the sync engine must then delete nothing.

    The failing request's error is `cause` (and `__cause__`); `pages_listed` says how far it got.
    """

    def __init__(self, space_key: str, cause: BaseException, *, pages_listed: int = 0) -> None:
        self.space_key = space_key
        self.cause = cause
        self.pages_listed = pages_listed
        super().__init__(f"listing of space {space_key} incomplete after {pages_listed} pages: {cause}")
