"""How askdocs reads OpenAI-compatible API failures: which to retry, how long to wait, how to say what broke.

Shared by the embedder (ingest) and the chat model (bot) so both retry and report the same way.
"""

from __future__ import annotations

import logging
import random
from typing import Final

import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

RETRY_STATUSES: Final = frozenset({408, 409, 429, 500, 502, 503, 504})


def is_retryable(err: BaseException) -> bool:
    """Rate limits, server errors, timeouts, dropped connections and in-stream error events."""
    if isinstance(err, openai.APIStatusError):
        return err.status_code in RETRY_STATUSES or err.status_code >= 500
    if isinstance(err, openai.APIResponseValidationError):
        return False
    return isinstance(err, openai.APIError)  # connection, timeout, or an error event inside a stream


def retry_after_s(err: BaseException) -> float | None:
    """The server's Retry-After (or retry-after-ms) in seconds, when it sent a number."""
    if not isinstance(err, openai.APIStatusError):
        return None
    headers = err.response.headers
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return float(ms) / 1000
        if (seconds := headers.get("retry-after")) is not None:
            return float(seconds)
    except ValueError:  # an HTTP date: fall back to our own backoff
        return None
    return None


def describe(err: BaseException, *, timeout_s: float) -> tuple[str, int | None]:
    """A short reason and the HTTP status; upstream text is never echoed (OpenAI's 401 quotes the key)."""
    if isinstance(err, openai.APIStatusError):
        # A client error's code (invalid_api_key, model_not_found) says what to fix; a 429/5xx's adds nothing.
        shown = err.code and not is_retryable(err) and err.code.replace("_", "").isalnum()
        code = f", {err.code}" if shown else ""
        return f"HTTP {err.status_code}{code}", err.status_code
    if isinstance(err, openai.APITimeoutError):
        return f"timed out after {timeout_s:g} s", None
    if isinstance(err, openai.APIConnectionError):
        return "could not connect", None
    if isinstance(err, openai.APIError):
        return "error event in the stream", None
    return type(err).__name__, None


def failure_message(subject: str, err: BaseException, *, attempts: int, timeout_s: float) -> tuple[str, int | None]:
    """"the language model is unavailable (HTTP 503) — tried 3 times" and the status, for the caller's error."""
    reason, status = describe(err, timeout_s=timeout_s)
    what = "is unavailable" if is_retryable(err) else "refused the request"
    tries = f" — tried {attempts} times" if attempts > 1 else ""
    return f"{subject} {what} ({reason}){tries}", status


def backoff_wait_s(state: RetryCallState, *, base_delay_s: float, max_delay_s: float) -> float:
    """Exponential backoff with jitter, stretched to the server's Retry-After, never past the max."""
    base = min(max_delay_s, base_delay_s * 2.0 ** (state.attempt_number - 1))
    wait = base / 2 + base / 2 * random.random()  # jitter spreads concurrent callers apart
    err = state.outcome.exception() if state.outcome is not None else None
    hint = retry_after_s(err) if err is not None else None
    if hint is not None:
        wait = max(wait, hint)
    return min(max(wait, 0.0), max_delay_s)


def retrying(
    *, what: str, attempts: int, base_delay_s: float, max_delay_s: float, timeout_s: float, log: logging.Logger
) -> AsyncRetrying:
    """The retry loop both OpenAI callers use: bounded attempts, backoff with jitter, one warning per retry."""

    def log_retry(state: RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome is not None else None
        reason = describe(err, timeout_s=timeout_s)[0] if err is not None else "?"
        sleep_s = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning("%s failed (%s), attempt %d of %d, retrying in %.2f s",
                    what, reason, state.attempt_number, attempts, sleep_s)

    return AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=lambda state: backoff_wait_s(state, base_delay_s=base_delay_s, max_delay_s=max_delay_s),
        retry=retry_if_exception(is_retryable),
        before_sleep=log_retry,
        reraise=True,
    )
