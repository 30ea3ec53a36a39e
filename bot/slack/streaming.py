"""Slack plumbing shared by listeners: background tasks, a live (edited-in-place) message, bot threads."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack import blocks

logger = logging.getLogger(__name__)


def new_ref() -> str:
    """A short id that ties an apology in Slack to its traceback in the log."""
    return secrets.token_hex(4)


def slack_error(error: BaseException) -> str | None:
    return str(error.response.get("error")) if isinstance(error, SlackApiError) else None


class BackgroundTasks:
    """Tasks started by listeners, kept referenced and awaited on shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None], *, name: str) -> None:
        task = asyncio.create_task(self._logged(work, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _logged(work: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await work
        except Exception:  # the last resort: listeners handle their own errors
            logger.exception("%s failed [ref %s]", name, new_ref())

    async def drain(self, timeout_s: float) -> None:
        """Let work in flight finish for up to `timeout_s`, then cancel what is left."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)


class LiveMessage:
    """A bot message edited in place at most once per `min_interval_s` (chat.update is Tier 3, ~50/min).

    The post that created it counts as the first edit, so a quick answer is a single final update.
    """

    def __init__(
        self, client: AsyncWebClient, channel: str, ts: str, *, min_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.channel, self.ts = channel, ts
        self._client = client
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._last = clock()
        self._edited = False

    async def stream(self, partial_markdown: str) -> None:
        """`on_delta` for the answer engine: show the text so far when an edit is due."""
        if self._clock() - self._last < self._min_interval_s:
            return
        try:
            await self._update(blocks.streaming(partial_markdown))
        except SlackApiError as error:  # a missed intermediate edit is harmless; the final one matters
            logger.warning("streaming update of %s/%s failed: %s", self.channel, self.ts, slack_error(error))
        except (OSError, TimeoutError) as error:  # a network hiccup, likewise
            logger.warning("streaming update of %s/%s failed: %s", self.channel, self.ts, error)

    async def finish(self, message: blocks.Message) -> None:
        if self._edited:
            await asyncio.sleep(max(0.0, self._last + self._min_interval_s - self._clock()))
        await self._update(message)

    async def _update(self, message: blocks.Message) -> None:
        self._last = self._clock()
        self._edited = True
        await self._client.chat_update(channel=self.channel, ts=self.ts, **message)
        self._last = self._clock()


class BotThreads:
    """Which threads the bot takes part in, so replies in other threads cost no API call.

    "Not a bot thread" is remembered for `negative_ttl_s` only: another askdocs process may answer there.
    """

    def __init__(self, max_size: int = 5000, *, negative_ttl_s: float = 300.0) -> None:
        self._known: OrderedDict[tuple[str, str], tuple[bool, float]] = OrderedDict()
        self._max_size = max_size
        self._negative_ttl_s = negative_ttl_s

    def mark(self, channel: str, thread_ts: str, has_bot: bool) -> None:
        self._known[(channel, thread_ts)] = (has_bot, time.monotonic())
        self._known.move_to_end((channel, thread_ts))
        if len(self._known) > self._max_size:
            self._known.popitem(last=False)

    def known_without_bot(self, channel: str, thread_ts: str) -> bool:
        entry = self._known.get((channel, thread_ts))
        return entry is not None and not entry[0] and time.monotonic() - entry[1] < self._negative_ttl_s
