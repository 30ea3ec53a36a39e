"""Slack plumbing shared by listeners: background tasks, an answer's reply (status, stream, final), bot threads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_chat_stream import AsyncChatStream
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack import blocks
from bot.slack.budget import RateBudget

if TYPE_CHECKING:
    from bot.answering.models import Answer

logger = logging.getLogger(__name__)
T = TypeVar("T")


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


# Errors that say "try again later", not "this workspace can't stream" (docs.slack.dev, Web API errors).
TRANSIENT_ERRORS = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable",
                              "request_timeout"})
CHANNEL_ERRORS = frozenset({"not_in_channel", "channel_not_found", "is_archived", "thread_not_found"})


class WorkspaceFeatures:
    """What each workspace refused once (native streaming, loading status), remembered for the process.

    Why: a plan or an admin policy may refuse chat.startStream or assistant.threads.setStatus; asking again
    for every answer would cost a call and a delay each time (issue 17: fall back once, remembered).
    """

    def __init__(self) -> None:
        self._refused: set[tuple[str, str]] = set()

    def allows(self, team_id: str | None, feature: str) -> bool:
        return (team_id or "-", feature) not in self._refused

    def refuse(self, team_id: str | None, feature: str, error: str | None) -> None:
        if self.allows(team_id, feature):
            logger.warning("workspace %s refused %s (%s): falling back for every answer there",
                           team_id or "-", feature, error)
        self._refused.add((team_id or "-", feature))


def refusal(error: BaseException) -> bool:
    """A Slack error meaning "not here, not ever" rather than a hiccup or a missing channel."""
    code = slack_error(error)
    return code is not None and code not in TRANSIENT_ERRORS and code not in CHANNEL_ERRORS


def retry_after_s(error: SlackApiError) -> float:
    try:
        return max(1.0, float(error.response.headers.get("Retry-After", 1)))
    except (TypeError, ValueError):
        return 1.0


@dataclass(frozen=True)
class ReplyTo:
    """Where an answer goes: a thread, and who asked (chat.startStream's recipient in channels)."""

    channel: str
    thread_ts: str
    user_id: str | None
    team_id: str | None  # the app's workspace: whose rate budget and features apply
    recipient_team_id: str | None = None  # the asker's own team (Slack Connect), else team_id


@dataclass(frozen=True)
class FinalRetry:
    """How long a final write keeps trying after Slack's 429s (past the SDK's own retries)."""

    attempts: int = 6


class AnswerReply:
    """One answer in a thread, as one bot message.

    Slack's loading status while searching; the model's text streamed with chat.startStream/appendStream
    (or, where the workspace refuses streaming, posted then edited with chat.update); the final answer at
    chat.stopStream with sources and feedback buttons. `on_delta` never waits for Slack: a writer task makes
    the intermediate calls, at most one per `min_interval_s` and only while the workspace's `RateBudget`
    has room, so a 429 or a slow call can't freeze the model's token stream. Final writes are never
    dropped: they take budget unconditionally and are retried after 429s.
    """

    def __init__(
        self, client: AsyncWebClient, to: ReplyTo, *, budget: RateBudget, features: WorkspaceFeatures,
        min_interval_s: float = 1.0, final_retry: FinalRetry = FinalRetry(),
    ) -> None:
        self._client = client
        self.to = to
        self._budget = budget
        self._features = features
        self._min_interval_s = min_interval_s
        self._final_retry = final_retry
        self._nonce = new_ref()
        self._latest = ""  # the model's text so far
        self._streamed = ""  # escaped markdown already sent with startStream/appendStream
        self._stream: AsyncChatStream | None = None
        self.ts: str | None = None  # the bot message, once there is one
        self._last_write = 0.0
        self._pending = asyncio.Event()
        self._closing = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    @property
    def streaming(self) -> bool:
        return self._stream is not None

    # ---- before the answer: the loading status (or a placeholder where there is none) -----------------

    async def show_status(self) -> None:
        team = self.to.team_id
        if self._features.allows(team, "status"):
            try:
                await self._client.assistant_threads_setStatus(
                    channel_id=self.to.channel, thread_ts=self.to.thread_ts, status=blocks.STATUS,
                    loading_messages=list(blocks.LOADING_MESSAGES))
                return
            except SlackApiError as error:
                if not refusal(error):
                    logger.warning("loading status in %s/%s failed: %s", self.to.channel, self.to.thread_ts,
                                   slack_error(error))
                    return
                self._features.refuse(team, "status", slack_error(error))
        # No native status here: the old placeholder, which then becomes the answer (edited in place).
        posted = await self._client.chat_postMessage(channel=self.to.channel, thread_ts=self.to.thread_ts,
                                                     **blocks.searching(nonce=self._nonce), **blocks.NO_UNFURL)
        self.ts = str(posted["ts"])
        self._last_write = time.monotonic()

    async def clear_status(self) -> None:
        """Best effort, for when nothing could be posted (a reply clears the status by itself)."""
        try:
            await self._client.assistant_threads_setStatus(channel_id=self.to.channel,
                                                           thread_ts=self.to.thread_ts, status="")
        except Exception as error:  # the answer already failed; this is cosmetic
            logger.warning("could not clear the status in %s/%s: %s", self.to.channel, self.to.thread_ts,
                           error)

    # ---- while the model writes ---------------------------------------------------------------------------

    async def on_delta(self, partial_markdown: str) -> None:
        """The answer engine's `on_delta`: remember the text; the writer task shows it when it may."""
        self._latest = partial_markdown
        self._pending.set()
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop(), name=f"askdocs-writer-{self.to.thread_ts}")

    async def _write_loop(self) -> None:
        while not self._closing.is_set():
            await self._pending.wait()
            delay = self._last_write + self._min_interval_s - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
            if self._closing.is_set():
                return
            self._pending.clear()
            try:
                wrote = await self._write_intermediate()
            except (SlackApiError, SlackRequestError, OSError, TimeoutError) as error:
                # A missed intermediate write is harmless: the next one (or the final) carries the text.
                logger.warning("intermediate write in %s/%s failed: %s", self.to.channel, self.to.thread_ts,
                               slack_error(error) or error)
                if isinstance(error, SlackApiError) and slack_error(error) == "ratelimited":
                    self._budget.exhaust(self.to.team_id, self._edit_method(),
                                         retry_after_s=retry_after_s(error))
                wrote = True
            if wrote is None:
                continue  # nothing whole to show yet: the next delta wakes the loop
            if wrote is False:
                self._pending.set()  # no budget now: try again after the interval with what has arrived
            self._last_write = time.monotonic()

    def _edit_method(self) -> str:
        return "chat.appendStream" if self._stream is not None or self.ts is None else "chat.update"

    async def _write_intermediate(self) -> bool | None:
        """One intermediate write: True when made, False when the budget is spent, None when there is
        nothing new to show."""
        team = self.to.team_id
        if self.ts is None and self._features.allows(team, "streaming"):
            piece = blocks.stream_piece(self._latest)
            if not piece:
                return None
            return await self._start_stream(piece)
        if self._stream is not None:
            shown = blocks.stream_piece(self._latest)
            if not shown.startswith(self._streamed):
                return None  # renumbering changed what was shown (rare): the final write corrects it
            piece = shown[len(self._streamed):]
            if not piece:
                return None
            if not self._budget.try_take(team, "chat.appendStream"):
                return False
            await self._stream.append(markdown_text=piece)
            self._streamed += piece
            return True
        message = blocks.streaming(self._latest, nonce=new_ref())
        if self.ts is None:
            posted = await self._client.chat_postMessage(channel=self.to.channel, thread_ts=self.to.thread_ts,
                                                         **message, **blocks.NO_UNFURL)
            self.ts = str(posted["ts"])
            return True
        if not self._budget.try_take(team, "chat.update"):
            return False
        await self._client.chat_update(channel=self.to.channel, ts=self.ts, **message)
        return True

    async def _start_stream(self, piece: str) -> bool | None:
        # In channels Slack needs the recipient; in DMs they are optional but harmless (docs.slack.dev).
        stream = await self._client.chat_stream(
            channel=self.to.channel, thread_ts=self.to.thread_ts, recipient_user_id=self.to.user_id,
            recipient_team_id=self.to.recipient_team_id or self.to.team_id, buffer_size=1)
        try:
            await stream.append(markdown_text=piece)
        except SlackApiError as error:
            if not refusal(error):
                raise
            self._features.refuse(self.to.team_id, "streaming", slack_error(error))
            return await self._write_intermediate()  # the post-then-update way, at once
        self._stream, self.ts, self._streamed = stream, stream.ts, piece
        return True

    # ---- the end ------------------------------------------------------------------------------------------

    async def finish(self, message: blocks.Message, *, result: Answer | None = None) -> None:
        """Show the final message (an answer, a problem, an apology) in the reply's one message."""
        await self._stop_writer()
        if self._stream is not None:
            stream = self._stream
            rest = blocks.stream_continuation(result, self._streamed) if result is not None else None
            ts = str(stream.ts)
            tail = blocks.answer_tail(result, nonce=self._nonce) if rest is not None and result else None
            # chat.stopStream itself, not stream.stop(): that one re-buffers its text on every retry.
            await self._final("chat.stopStream", lambda: self._client.chat_stopStream(
                channel=self.to.channel, ts=ts, markdown_text=rest or None, blocks=tail))
            if tail is not None:
                return
        if self.ts is not None:
            await self.replace(message)
            return
        posted = await self._final("chat.postMessage", lambda: self._client.chat_postMessage(
            channel=self.to.channel, thread_ts=self.to.thread_ts, **message, **blocks.NO_UNFURL))
        self.ts = str(posted["ts"])

    async def replace(self, message: blocks.Message) -> None:
        """Put `message` in place of the reply's message (a corrected or refreshed answer)."""
        ts = self.ts
        assert ts is not None
        await self._final("chat.update", lambda: self._client.chat_update(
            channel=self.to.channel, ts=ts, **message))

    async def _stop_writer(self) -> None:
        self._closing.set()
        self._pending.set()
        if self._writer is not None:
            await self._writer

    async def _final(self, method: str, call: Callable[[], Awaitable[Any]]) -> Any:
        return await write_final(call, budget=self._budget, team_id=self.to.team_id, method=method,
                                 retry=self._final_retry, where=f"{self.to.channel}/{self.to.thread_ts}")


async def write_final(
    call: Callable[[], Awaitable[T]], *, budget: RateBudget, team_id: str | None, method: str,
    retry: FinalRetry = FinalRetry(), where: str = "-",
) -> T:
    """A final write (an answer, a sync summary): never dropped for budget, and tried again after Slack's
    429s past the SDK's own retries. Runs in the answer's task, never inside a model's token loop."""
    for attempt in range(1, retry.attempts + 1):
        budget.take_final(team_id, method)
        try:
            return await call()
        except SlackApiError as error:
            if slack_error(error) != "ratelimited" or attempt == retry.attempts:
                raise
            wait_s = retry_after_s(error)
            budget.exhaust(team_id, method, retry_after_s=wait_s)
            logger.warning("%s in %s rate limited; retrying in %.0f s", method, where, wait_s)
            await asyncio.sleep(wait_s)
    raise AssertionError("unreachable: the last attempt returns or raises")


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
