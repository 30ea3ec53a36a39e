"""Slack emulator: Web API + Socket Mode on 127.0.0.1, driven by the real slack_sdk and Bolt clients.

Why: the product's tests run the real `AsyncApp` + `AsyncSocketModeHandler`; faking at the wire keeps them
honest about acks, threads, Block Kit limits, rate limits and reconnects. Wire shapes follow docs.slack.dev
(Web API methods, Socket Mode envelopes, Block Kit reference). Point `AsyncWebClient(base_url=...)` at
`start()`'s return value ("http://127.0.0.1:PORT/api/"); slack_sdk urljoins the method name onto it.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import itertools
import json
import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web

T = TypeVar("T")
Json = dict[str, Any]

# Limits documented by Slack (chat.postMessage, Block Kit reference). Constants, never mutated.
MAX_TEXT_CHARS = 40_000
MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_SECTION_TEXT_CHARS = 3_000
MAX_SECTION_FIELDS = 10
MAX_FIELD_TEXT_CHARS = 2_000
MAX_HEADER_TEXT_CHARS = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTIONS_ELEMENTS = 25
APP_TOKEN_METHODS = frozenset({"apps.connections.open"})
JSON_STRING_PARAMS = ("blocks", "attachments", "view", "metadata")
BLOCK_TYPES = frozenset(
    {"section", "divider", "image", "actions", "context", "input", "file", "header", "video", "rich_text",
     "markdown", "table", "context_actions"}
)
MAX_CONTEXT_ACTIONS_ELEMENTS = 5
MAX_FEEDBACK_TEXT_CHARS = 75
MAX_STREAM_MARKDOWN_CHARS = 12_000  # chat.startStream/appendStream/stopStream markdown_text
MAX_SUGGESTED_PROMPTS = 4
# Per-method limits per workspace (docs.slack.dev rate limits): Tier 3 chat.update, Tier 4 appendStream.
SLACK_TIER_LIMITS: dict[str, int] = {"chat.update": 50, "chat.appendStream": 100}
STREAMING_REFUSED = "feature_not_enabled"  # the emulator's answer when streaming is off (plan or policy)
FIRST_TS_US = 1_700_000_000_000_100  # first ts "1700000000.000100"; each new ts adds 100 µs


class SlackError(Exception):
    """A Web API error answered as `{"ok": false, "error": ...}`; `extra` adds fields such as `errors`."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


@dataclass(frozen=True)
class ApiCall:
    """One Web API (or response_url) request as the emulator received it; `time` is `time.monotonic()`."""

    method: str
    params: Json
    time: float
    error: str | None = None
    status: int = 200

    @property
    def ok(self) -> bool:
        return self.error is None


class Ack(NamedTuple):
    """An envelope ack: monotonic arrival time, seconds since the envelope was sent, the ack's payload."""

    ack_time: float
    latency_s: float
    payload: Json | None


@dataclass
class Channel:
    """A conversation the emulator knows; `bot_member` decides `not_in_channel`."""

    id: str
    name: str
    is_im: bool = False
    user: str | None = None
    bot_member: bool = True
    is_mpim: bool = False

    @property
    def channel_type(self) -> str:
        """The `channel_type` of message events here."""
        return "im" if self.is_im else "mpim" if self.is_mpim else "channel"

    def to_wire(self) -> Json:
        if self.is_im:
            return {"id": self.id, "is_im": True, "user": self.user, "is_open": True, "created": 1700000000}
        if self.is_mpim:
            return {"id": self.id, "name": self.name, "is_mpim": True, "is_group": True, "is_im": False,
                    "is_private": True, "is_member": self.bot_member, "created": 1700000000}
        return {"id": self.id, "name": self.name, "is_channel": True, "is_group": False, "is_im": False,
                "is_private": False, "is_archived": False, "is_member": self.bot_member,
                "created": 1700000000}


@dataclass
class _Socket:
    ws: web.WebSocketResponse
    retiring: bool = False  # asked to reconnect: new envelopes go to a newer socket


@dataclass
class _Fault:
    error: str
    status: int = 200
    retry_after: int | None = None


@dataclass
class _ResponseUrl:
    kind: str  # "slash_commands" | "interactive"
    channel: str
    user: str
    message_ts: str | None = None
    used: int = 0


@dataclass
class _Sent:
    envelope: Json
    sent_at: float
    extra: Json = field(default_factory=dict)


def block_errors(blocks: Any, *, max_blocks: int = MAX_MESSAGE_BLOCKS) -> list[str]:
    """Slack-style error strings for a blocks array; empty when Slack would accept it."""
    if not isinstance(blocks, list):
        return ["must be an array [json-pointer:/blocks]"]
    errors: list[str] = []
    if len(blocks) > max_blocks:
        errors.append(f"must be less than {max_blocks + 1} items [json-pointer:/blocks]")
    seen_ids: set[str] = set()
    for i, block in enumerate(blocks):
        where = f"[json-pointer:/blocks/{i}]"
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            errors.append(f"unsupported type {where}")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if block_id in seen_ids:
                errors.append(f"duplicate block_id {where}")
            seen_ids.add(block_id)
        errors.extend(_one_block_errors(block, where))
    return errors


def _text_errors(obj: Any, where: str, *, max_chars: int, plain_only: bool = False) -> list[str]:
    allowed = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if not isinstance(obj, dict) or obj.get("type") not in allowed or not isinstance(obj.get("text"), str):
        return [f"must be a valid text object {where}"]
    text = obj["text"]
    if not text:
        return [f"must be more than 0 characters {where}"]
    if len(text) > max_chars:
        return [f"must be less than {max_chars + 1} characters {where}"]
    return []


def _one_block_errors(block: Json, where: str) -> list[str]:
    kind = block["type"]
    if kind == "section":
        if "text" not in block and "fields" not in block:
            return [f"must provide either text or fields {where}"]
        errors = []
        if "text" in block:
            errors += _text_errors(block["text"], f"{where[:-1]}/text]", max_chars=MAX_SECTION_TEXT_CHARS)
        fields = block.get("fields", [])
        if len(fields) > MAX_SECTION_FIELDS:
            errors.append(f"must be less than {MAX_SECTION_FIELDS + 1} items {where[:-1]}/fields]")
        for j, f in enumerate(fields):
            errors += _text_errors(f, f"{where[:-1]}/fields/{j}]", max_chars=MAX_FIELD_TEXT_CHARS)
        return errors
    if kind == "header":
        return _text_errors(block.get("text"), f"{where[:-1]}/text]", max_chars=MAX_HEADER_TEXT_CHARS,
                            plain_only=True)
    if kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_CONTEXT_ELEMENTS:
            return [f"must have 1 to {MAX_CONTEXT_ELEMENTS} elements {where[:-1]}/elements]"]
    if kind == "actions":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_ACTIONS_ELEMENTS:
            return [f"must have 1 to {MAX_ACTIONS_ELEMENTS} elements {where[:-1]}/elements]"]
    if kind == "context_actions":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_CONTEXT_ACTIONS_ELEMENTS:
            return [f"must have 1 to {MAX_CONTEXT_ACTIONS_ELEMENTS} elements {where[:-1]}/elements]"]
        errors = []
        for j, element in enumerate(elements):
            at = f"{where[:-1]}/elements/{j}]"
            if not isinstance(element, dict) or element.get("type") not in ("feedback_buttons", "icon_button"):
                errors.append(f"unsupported type {at}")
                continue
            if element["type"] == "feedback_buttons":
                for side in ("positive_button", "negative_button"):
                    button = element.get(side)
                    if not isinstance(button, dict) or not isinstance(button.get("value"), str):
                        errors.append(f"missing required field: value {at[:-1]}/{side}]")
                        continue
                    errors += _text_errors(button.get("text"), f"{at[:-1]}/{side}/text]",
                                           max_chars=MAX_FEEDBACK_TEXT_CHARS, plain_only=True)
        return errors
    return []


class SlackEmulator:
    """In-process Slack: Web API at /api/, Socket Mode at /link, response_urls at /response_url/<id>.

    State is editable (`add_channel`, `add_user`, `set_bot_member`) and every request is recorded (`calls`).
    """

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test",
        app_token: str = "xapp-test",
        bot_user_id: str = "UBOT",
        team_id: str = "T1",
        bot_id: str = "BBOT",
        app_id: str = "A1",
        rate_limits: dict[str, int] | None = None,
        rate_window_s: float = 60.0,
        streaming_enabled: bool = True,
    ) -> None:
        """`rate_limits` (calls of a method per `rate_window_s`, for the whole workspace) default to Slack's
        tiers for chat.update and chat.appendStream; shrink the window to keep tests fast. Calls past a
        limit get HTTP 429 with Retry-After, as Slack answers."""
        self.bot_token, self.app_token = bot_token, app_token
        self.bot_user_id, self.team_id, self.bot_id, self.app_id = bot_user_id, team_id, bot_id, app_id
        self.calls: list[ApiCall] = []
        self.web_api_peers: list[object] = []  # client address of each Web API call: connections reused?
        self.acks: dict[str, Ack] = {}
        self.sent: dict[str, Json] = {}  # envelope_id -> envelope, in send order
        self.ephemerals: list[Json] = []
        self.response_url_posts: list[Json] = []
        self.published_views: list[Json] = []  # {"user_id", "view"} in publish order
        self.connections = 0  # WebSocket connections accepted so far, so tests can see a reconnect
        self.channels: dict[str, Channel] = {}
        self.users: dict[str, Json] = {}
        self.rate_limits = dict(SLACK_TIER_LIMITS if rate_limits is None else rate_limits)
        self.rate_window_s = rate_window_s
        self.streaming_enabled = streaming_enabled
        self.statuses: dict[tuple[str, str], str] = {}  # (channel, thread_ts) -> the loading status shown
        self.suggested_prompts: list[Json] = []  # setSuggestedPrompts params, in call order
        self._streaming: set[tuple[str, str]] = set()  # messages still being streamed
        self._accepted: dict[str, deque[float]] = {}  # method -> times of calls inside the rate window
        self._messages: dict[tuple[str, str], Json] = {}
        self._faults: dict[str, deque[_Fault]] = {}
        self._sockets: list[_Socket] = []
        self._tickets: set[str] = set()
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._sent_meta: dict[str, _Sent] = {}
        self._ts_counter = itertools.count()
        self._id_counter = itertools.count(1)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""  # "http://127.0.0.1:PORT" once started
        self._methods: dict[str, Callable[[Json], Json]] = {
            "auth.test": self._auth_test,
            "apps.connections.open": self._apps_connections_open,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.delete": self._chat_delete,
            "conversations.replies": self._conversations_replies,
            "conversations.history": self._conversations_history,
            "conversations.join": self._conversations_join,
            "conversations.info": self._conversations_info,
            "users.info": self._users_info,
            "views.publish": self._views_publish,
            "reactions.add": self._reactions_add,
            "assistant.threads.setStatus": self._set_status,
            "assistant.threads.setSuggestedPrompts": self._set_suggested_prompts,
            "chat.startStream": self._chat_start_stream,
            "chat.appendStream": self._chat_append_stream,
            "chat.stopStream": self._chat_stop_stream,
        }
        self.add_user(bot_user_id, name="askdocs", is_bot=True)
        self.add_user("U1", name="alice", real_name="Alice Example")
        self.add_channel("C1", name="general")
        self.add_channel("D1", is_im=True, user="U1")

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> str:
        """Serve on an ephemeral 127.0.0.1 port; returns the Web API base URL, ending in "/api/"."""
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_get("/link", self._handle_link)
        app.router.add_get("/link/", self._handle_link)
        app.router.add_post("/response_url/{id}", self._handle_response_url)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.base_url

    @property
    def base_url(self) -> str:
        """What to give `AsyncWebClient(base_url=...)` and SLACK_API_URL."""
        return f"{self.url}/api/"

    async def stop(self) -> None:
        """Close open sockets (a still-running client will see a close) and the server."""
        for sock in list(self._sockets):
            await sock.ws.close(code=WSCloseCode.GOING_AWAY, message=b"emulator stopping")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SlackEmulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ---------------------------------------------------------------- workspace state

    def add_channel(
        self, channel_id: str, *, name: str | None = None, bot_member: bool = True, is_im: bool = False,
        user: str | None = None, is_mpim: bool = False,
    ) -> Channel:
        """Create (or replace) a channel; an IM needs the `user` at the other end; `is_mpim` is a group DM."""
        channel = Channel(channel_id, name or channel_id.lower(), is_im=is_im, user=user,
                          bot_member=True if is_im else bot_member, is_mpim=is_mpim)
        self.channels[channel_id] = channel
        return channel

    def set_bot_member(self, channel_id: str, member: bool) -> None:
        """Make the bot join or leave a channel: posting there then works or fails with not_in_channel."""
        self.channels[channel_id].bot_member = member

    def add_user(self, user_id: str, *, name: str, real_name: str | None = None, is_bot: bool = False,
                 tz: str = "Europe/London", guest: str | None = None, team_id: str | None = None) -> Json:
        """Create (or replace) a user answered by users.info: a member, a guest (`guest="single"` or
        `"multi"`: is_ultra_restricted / is_restricted) or, with another `team_id`, a Slack Connect user."""
        user = {"id": user_id, "team_id": team_id or self.team_id, "name": name, "real_name": real_name or name,
                "deleted": False, "is_bot": is_bot, "tz": tz,
                "is_restricted": guest is not None, "is_ultra_restricted": guest == "single",
                "profile": {"real_name": real_name or name, "display_name": name,
                            "email": None if is_bot else f"{name}@example.com"}}
        self.users[user_id] = user
        return user

    # ---------------------------------------------------------------- faults

    def set_rate_limits(self, limits: dict[str, int], *, window_s: float | None = None) -> None:
        """Change the per-method limits (and window) from now on, with empty windows."""
        self.rate_limits = dict(limits)
        if window_s is not None:
            self.rate_window_s = window_s
        self._accepted.clear()

    def rate_limit_next(self, method: str, *, retry_after: int = 1, n: int = 1) -> None:
        """Answer the next `n` calls of `method` with HTTP 429, `Retry-After` and error "ratelimited"."""
        for _ in range(n):
            self._faults.setdefault(method, deque()).append(_Fault("ratelimited", 429, retry_after))

    def fail_next(self, method: str, error: str = "internal_error", *, n: int = 1) -> None:
        """Answer the next `n` calls of `method` with `{"ok": false, "error": error}` (HTTP 200, as Slack)."""
        for _ in range(n):
            self._faults.setdefault(method, deque()).append(_Fault(error))

    # ---------------------------------------------------------------- inspection

    @property
    def messages(self) -> list[Json]:
        """Every live message, user's and bot's, oldest first (channel, ts, thread_ts, text, blocks, user)."""
        return sorted(self._messages.values(), key=lambda m: str(m["ts"]))

    def messages_in_thread(self, channel: str, thread_ts: str) -> list[Json]:
        """The thread's parent then its replies, oldest first (empty if the parent is unknown)."""
        return [m for m in self.messages if m["channel"] == channel
                and (m["ts"] == thread_ts or m.get("thread_ts") == thread_ts)]

    def bot_messages(self, channel: str | None = None) -> list[Json]:
        """Messages the bot posted, oldest first, optionally in one channel."""
        return [m for m in self.messages
                if m.get("bot_id") == self.bot_id and (channel is None or m["channel"] == channel)]

    def is_streaming(self, channel: str, ts: str) -> bool:
        """Whether a message was started with chat.startStream and not stopped yet."""
        return (channel, ts) in self._streaming

    async def wait_for_message(
        self, predicate: Callable[[Json], bool], *, timeout: float = 10,  # noqa: ASYNC109
    ) -> Json:
        """The first stored message (as conversations.replies renders it, plus "channel") matching
        `predicate`, waiting until one does: what a user would see, however it was written."""
        def find() -> Json | None:
            for message in self.messages:
                shown = {**self._render(message), "channel": message["channel"]}
                if predicate(shown):
                    return shown
            return None

        return await self._wait_until(find, timeout, "a matching message")

    def calls_of(self, method: str) -> list[ApiCall]:
        """Every recorded call of one method, including failed ones."""
        return [c for c in self.calls if c.method == method]

    @property
    def open_connections(self) -> int:
        return sum(1 for s in self._sockets if not s.ws.closed)

    async def wait_for(
        self, method: str, predicate: Callable[[Json], bool] = lambda params: True, *,
        timeout: float = 10,  # noqa: ASYNC109 - the public API the tests share
        since: int = 0, ok: bool | None = True,
    ) -> Json:
        """Params of the first call of `method` at index >= `since` matching `predicate`, waiting if needed.

        `ok=True` (default) matches only calls the emulator answered successfully, so a 429'd attempt does not
        count as "posted"; `ok=False` only failed ones; `None` either. "response_url" is a method name too.
        """
        def find() -> ApiCall | None:
            return next((c for c in self.calls[since:] if c.method == method
                         and (ok is None or c.ok == ok) and predicate(c.params)), None)

        call = await self._wait_until(find, timeout, f"a matching {method} call")
        return call.params

    async def wait_for_ack(self, envelope_id: str, timeout: float = 5) -> Ack:  # noqa: ASYNC109
        """The ack of one envelope, waiting for it."""
        return await self._wait_until(lambda: self.acks.get(envelope_id), timeout, f"an ack of {envelope_id}")

    async def wait_for_connections(self, count: int, timeout: float = 5) -> None:  # noqa: ASYNC109
        """Wait until `count` WebSocket connections have been accepted in total and one is open."""
        def reached() -> bool | None:
            return (self.connections >= count and self._live_socket() is not None) or None

        await self._wait_until(reached, timeout, f"{count} socket connections")

    async def _wait_until(self, check: Callable[[], T | None], timeout_s: float, what: str) -> T:
        async with self._changed:
            try:
                result = await asyncio.wait_for(self._changed.wait_for(check), timeout_s)
            except TimeoutError:
                recent = [(c.method, c.error) for c in self.calls[-10:]]
                raise TimeoutError(f"no {what} within {timeout_s}s; last calls: {recent}") from None
        assert result is not None
        return result

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ---------------------------------------------------------------- Socket Mode: driving the app

    async def send_event(
        self, event: Json, *, event_id: str | None = None, retry_attempt: int = 0, retry_reason: str = "",
        connection: int | None = None,
    ) -> str:
        """Deliver an Events API payload in an `events_api` envelope; returns the envelope_id.

        `connection`: the index among open connections, oldest first (two replicas each hold one; Slack may
        redeliver to either). By default the newest, as Slack favours."""
        event_id = event_id or f"Ev{next(self._id_counter):010d}"
        payload = {
            "token": "verification-token", "team_id": self.team_id, "api_app_id": self.app_id,
            "event": event, "type": "event_callback", "event_id": event_id, "event_time": int(time.time()),
            "authorizations": [{"enterprise_id": None, "team_id": self.team_id, "user_id": self.bot_user_id,
                                "is_bot": True, "is_enterprise_install": False}],
            "is_ext_shared_channel": False, "event_context": f"4-{event_id}",
        }
        return await self._send_envelope("events_api", payload, accepts_response_payload=False,
                                         retry_attempt=retry_attempt, retry_reason=retry_reason,
                                         connection=connection)

    async def mention(
        self, text: str, *, channel: str = "C1", user: str = "U1", thread_ts: str | None = None,
        also_message_event: bool = False,
    ) -> tuple[str, str]:
        """A user @mentions the bot: stores the message and sends `app_mention`; returns (envelope_id, ts).

        `also_message_event` sends the `message` event Slack adds when message.channels is subscribed too.
        """
        mention = f"<@{self.bot_user_id}>"
        full = text if text.startswith(mention) else f"{mention} {text}"
        msg = self._store_user_message(channel, user, full, thread_ts)
        event = self._user_event("app_mention", msg)
        envelope_id = await self.send_event(event)
        if also_message_event:
            await self.send_event({**self._user_event("message", msg), "channel_type": "channel"})
        return envelope_id, msg["ts"]

    async def dm(self, text: str, *, user: str = "U1", thread_ts: str | None = None) -> tuple[str, str]:
        """A user writes to the bot in its DM ("D1" for U1): a `message` event with channel_type "im"."""
        channel = self._im_for(user)
        msg = self._store_user_message(channel.id, user, text, thread_ts)
        envelope_id = await self.send_event({**self._user_event("message", msg), "channel_type": "im"})
        return envelope_id, msg["ts"]

    async def user_message(
        self, text: str, *, channel: str, user: str = "U1", thread_ts: str | None = None,
    ) -> tuple[str, str]:
        """A user's message without a mention (channel, group DM or DM): a `message` event with the
        channel's channel_type; returns (envelope_id, ts)."""
        msg = self._store_user_message(channel, user, text, thread_ts)
        event = {**self._user_event("message", msg), "channel_type": self.channels[channel].channel_type}
        return await self.send_event(event), msg["ts"]

    async def open_messages_tab(self, user: str = "U1") -> str:
        """A user opens the app's Messages tab (the agent's conversation): `app_home_opened`, tab messages."""
        event: Json = {"type": "app_home_opened", "user": user, "channel": self._im_for(user).id,
                       "tab": "messages", "event_ts": self._next_ts()}
        return await self.send_event(event)

    async def slash_command(
        self, command: str, text: str, *, user_id: str = "U1", channel_id: str = "C1"
    ) -> str:
        """A user runs a slash command: a `slash_commands` envelope whose ack may carry a response payload."""
        channel = self._channel(channel_id)
        response_url = self._new_response_url(_ResponseUrl("slash_commands", channel_id, user_id))
        payload = {
            "token": "verification-token", "team_id": self.team_id, "team_domain": "example",
            "channel_id": channel_id, "channel_name": "directmessage" if channel.is_im else channel.name,
            "user_id": user_id, "user_name": self.users.get(user_id, {}).get("name", user_id),
            "command": command, "text": text, "api_app_id": self.app_id, "is_enterprise_install": "false",
            "response_url": response_url, "trigger_id": self._trigger_id(),
        }
        return await self._send_envelope("slash_commands", payload, accepts_response_payload=True)

    async def click(
        self, action_id: str, value: str, *, user_id: str = "U1", channel: str = "C1",
        message_ts: str | None = None, block_id: str | None = None,
    ) -> str:
        """A user clicks a button (`block_actions`); `message_ts` defaults to the bot's latest message."""
        if message_ts is None:
            latest = self.bot_messages(channel)
            if not latest:
                raise ValueError(f"no bot message in {channel} to click on; pass message_ts")
            message_ts = latest[-1]["ts"]
        message = self._message(channel, message_ts)
        block_id = block_id or _block_id_of(message.get("blocks") or [], action_id) or "actions"
        element_type = _element_type_of(message.get("blocks") or [], action_id) or "button"
        response_url = self._new_response_url(_ResponseUrl("interactive", channel, user_id, message_ts))
        user_name = self.users.get(user_id, {}).get("name", user_id)
        payload = {
            "type": "block_actions", "token": "verification-token", "api_app_id": self.app_id,
            "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": self._team_of(user_id)},
            "team": {"id": self.team_id, "domain": "example"},
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel,
                          "is_ephemeral": False},
            "channel": {"id": channel, "name": self._channel(channel).name},
            "message": self._render(message), "state": {"values": {}},
            "trigger_id": self._trigger_id(), "response_url": response_url, "is_enterprise_install": False,
            "actions": [{"action_id": action_id, "block_id": block_id, "value": value, "type": element_type,
                         "action_ts": self._next_ts(), "text": {"type": "plain_text", "text": value}}],
        }
        return await self._send_envelope("interactive", payload, accepts_response_payload=False)

    async def open_home(self, user: str = "U1") -> str:
        """A user opens the app's Home tab: an `app_home_opened` event."""
        event: Json = {"type": "app_home_opened", "user": user, "channel": self._im_for(user).id,
                       "tab": "home", "event_ts": self._next_ts()}
        views = [v["view"] for v in self.published_views if v["user_id"] == user]
        if views:
            event["view"] = views[-1]
        return await self.send_event(event)

    async def redeliver(self, envelope_id: str, *, reason: str = "timeout") -> str:
        """Send an events_api envelope again as Slack's retry does: same event_id, retry_attempt + 1."""
        original = self.sent[envelope_id]
        if original["type"] != "events_api":
            raise ValueError(f"only events_api envelopes are retried by Slack, not {original['type']}")
        return await self._send_envelope(
            "events_api", original["payload"], accepts_response_payload=False,
            retry_attempt=original["retry_attempt"] + 1, retry_reason=reason)

    async def request_reconnect(self, *, send_disconnect: bool = True, drop: bool = False) -> None:
        """Ask the app to reconnect: a `disconnect` message ("refresh_requested") and/or closing the socket.

        Envelopes sent afterwards wait for a newer connection; `wait_for_connections(n)` shows the reconnect.
        """
        for sock in list(self._sockets):
            if sock.ws.closed:
                continue
            sock.retiring = True
            if send_disconnect:
                await sock.ws.send_json({"type": "disconnect", "reason": "refresh_requested",
                                         "debug_info": {"host": "applink-emulator"}})
            if drop:
                await sock.ws.close(code=WSCloseCode.GOING_AWAY, message=b"refresh_requested")

    async def _send_envelope(
        self, kind: str, payload: Json, *, accepts_response_payload: bool, retry_attempt: int = 0,
        retry_reason: str = "", connect_timeout_s: float = 5, connection: int | None = None,
    ) -> str:
        envelope_id = str(uuid.uuid4())
        envelope: Json = {"envelope_id": envelope_id, "type": kind, "payload": payload,
                          "accepts_response_payload": accepts_response_payload}
        if kind == "events_api":
            envelope |= {"retry_attempt": retry_attempt, "retry_reason": retry_reason}
        sock = await self._wait_until(self._live_socket, connect_timeout_s, "open Socket Mode connection")
        if connection is not None:
            sock = [s for s in self._sockets if not s.ws.closed and not s.retiring][connection]
        self.sent[envelope_id] = envelope
        self._sent_meta[envelope_id] = _Sent(envelope, time.monotonic())
        await sock.ws.send_json(envelope)
        return envelope_id

    def _live_socket(self) -> _Socket | None:
        live = [s for s in self._sockets if not s.ws.closed and not s.retiring]
        return live[-1] if live else None

    # ---------------------------------------------------------------- HTTP handlers

    async def _handle_link(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("ticket") not in self._tickets:
            return web.Response(status=401, text="invalid ticket")
        ws = web.WebSocketResponse(timeout=2.0)
        await ws.prepare(request)
        sock = _Socket(ws)
        self._sockets.append(sock)
        self.connections += 1
        await ws.send_json({"type": "hello", "num_connections": self.open_connections,
                            "debug_info": {"host": "applink-emulator", "build_number": 1,
                                           "approximate_connection_time": 18060},
                            "connection_info": {"app_id": self.app_id}})
        await self._notify()
        try:
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    await self._on_socket_text(frame.data)
        finally:
            self._sockets.remove(sock)
            await self._notify()
        return ws

    async def _on_socket_text(self, data: str) -> None:
        message = json.loads(data)
        envelope_id = message.get("envelope_id")
        if not envelope_id:
            return
        now = time.monotonic()
        sent = self._sent_meta.get(envelope_id)
        payload = message.get("payload")
        self.acks[envelope_id] = Ack(now, now - sent.sent_at if sent else float("nan"), payload)
        # A slash command's ack payload is what the user sees (ephemeral unless response_type is in_channel).
        if sent and sent.envelope["type"] == "slash_commands" and payload:
            p = sent.envelope["payload"]
            target = _ResponseUrl("slash_commands", p["channel_id"], p["user_id"])
            self._show_response(payload, target, via="ack")
        await self._notify()

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params: Json = dict(request.query)
        if request.content_type == "application/json" and request.can_read_body:
            params.update(await request.json())
        elif request.method == "POST":
            params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        token = params.pop("token", None)
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth.removeprefix("Bearer ")
        headers: dict[str, str] = {}
        status = 200
        try:
            self._check_token(method, token)
            params = _decode_json_params(params)
            fault = self._take_fault(method) or self._over_limit(method)
            if fault is not None:
                status = fault.status
                if fault.retry_after is not None:
                    headers["Retry-After"] = str(fault.retry_after)
                raise SlackError(fault.error)
            handler = self._methods.get(method)
            if handler is None:
                raise SlackError("unknown_method", req_method=method)
            body = {"ok": True, **handler(params)}
            error = None
        except SlackError as err:
            body = {"ok": False, "error": err.error, **err.extra}
            error = err.error
        self.calls.append(ApiCall(method, params, time.monotonic(), error, status))
        self.web_api_peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        await self._notify()
        return web.json_response(body, status=status, headers=headers)

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        target = self._response_urls.get(request.match_info["id"])
        body = await request.json()
        self.calls.append(ApiCall("response_url", body, time.monotonic(),
                                  None if target else "expired_url", 200 if target else 404))
        if target is None:
            await self._notify()
            return web.json_response({"ok": False, "error": "expired_url"}, status=404)
        target.used += 1
        self.response_url_posts.append({"id": request.match_info["id"], "body": body,
                                        "time": time.monotonic(), "channel": target.channel,
                                        "user": target.user})
        self._show_response(body, target, via="response_url")
        await self._notify()
        return web.json_response({"ok": True})

    def _show_response(self, body: Json, target: _ResponseUrl, *, via: str) -> None:
        """Apply a response_url/ack payload the way Slack shows it to the user."""
        if body.get("delete_original") and target.message_ts:
            self._messages.pop((target.channel, target.message_ts), None)
        elif body.get("replace_original") and target.message_ts:
            msg = self._message(target.channel, target.message_ts)
            blocks = body.get("blocks")
            msg.update(text=body.get("text", msg["text"]), blocks=_with_block_ids(blocks) if blocks else None)
        elif body.get("response_type") == "in_channel":
            self._store_bot_message(target.channel, body.get("text", ""), body.get("blocks"),
                                    body.get("thread_ts"))
        elif body.get("text") or body.get("blocks"):
            self.ephemerals.append({"channel": target.channel, "user": target.user, "via": via,
                                    "text": body.get("text", ""), "blocks": body.get("blocks"),
                                    "thread_ts": body.get("thread_ts")})

    # ---------------------------------------------------------------- Web API methods

    def _check_token(self, method: str, token: str | None) -> None:
        if not token:
            raise SlackError("not_authed")
        if token not in (self.bot_token, self.app_token):
            raise SlackError("invalid_auth")
        if (token == self.app_token) != (method in APP_TOKEN_METHODS):
            raise SlackError("not_allowed_token_type")

    def _over_limit(self, method: str) -> _Fault | None:
        """A 429 when `method` already had its limit of calls in the last `rate_window_s` (sliding)."""
        limit = self.rate_limits.get(method)
        if limit is None:
            return None
        now = time.monotonic()
        accepted = self._accepted.setdefault(method, deque())
        while accepted and accepted[0] <= now - self.rate_window_s:
            accepted.popleft()
        if len(accepted) >= limit:
            wait_s = accepted[0] + self.rate_window_s - now
            return _Fault("ratelimited", 429, max(1, math.ceil(wait_s)))
        accepted.append(now)
        return None

    def _take_fault(self, method: str) -> _Fault | None:
        queue = self._faults.get(method)
        return queue.popleft() if queue else None

    def _auth_test(self, params: Json) -> Json:
        return {"url": "https://example.slack.com/", "team": "Example", "user": "askdocs",
                "team_id": self.team_id, "user_id": self.bot_user_id, "bot_id": self.bot_id,
                "is_enterprise_install": False}

    def _apps_connections_open(self, params: Json) -> Json:
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        return {"url": f"ws://{self.url.removeprefix('http://')}/link?ticket={ticket}&app_id={self.app_id}"}

    def _chat_post_message(self, params: Json) -> Json:
        channel = self._writable_channel(params.get("channel"))
        text, blocks = _message_content(params)
        msg = self._store_bot_message(channel.id, text, blocks, params.get("thread_ts") or None)
        return {"channel": channel.id, "ts": msg["ts"], "message": self._render(msg)}

    def _chat_update(self, params: Json) -> Json:
        channel = self._channel(params.get("channel"))
        msg = self._message(channel.id, _required(params, "ts"))
        if msg.get("bot_id") != self.bot_id:
            raise SlackError("cant_update_message")
        text, blocks = _message_content(params, allow_empty="text" in params or "blocks" in params)
        if "text" in params:
            msg["text"] = text
        if blocks is not None:
            msg["blocks"] = blocks
        msg["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        return {"channel": channel.id, "ts": msg["ts"], "text": msg["text"], "message": self._render(msg)}

    def _chat_post_ephemeral(self, params: Json) -> Json:
        channel = self._writable_channel(params.get("channel"))
        user = _required(params, "user")
        if user not in self.users:
            raise SlackError("user_not_found")
        text, blocks = _message_content(params)
        ts = self._next_ts()
        self.ephemerals.append({"channel": channel.id, "user": user, "text": text, "blocks": blocks,
                                "thread_ts": params.get("thread_ts"), "ts": ts, "via": "chat.postEphemeral"})
        return {"message_ts": ts}

    def _chat_delete(self, params: Json) -> Json:
        channel = self._channel(params.get("channel"))
        msg = self._message(channel.id, _required(params, "ts"))
        if msg.get("bot_id") != self.bot_id:
            raise SlackError("cant_delete_message")
        del self._messages[(channel.id, msg["ts"])]
        return {"channel": channel.id, "ts": msg["ts"]}

    def _conversations_replies(self, params: Json) -> Json:
        channel = self._readable_channel(params.get("channel"))
        ts = _required(params, "ts")
        root = self._messages.get((channel.id, ts))
        if root is None:
            raise SlackError("thread_not_found")
        thread = self.messages_in_thread(channel.id, root.get("thread_ts") or ts)
        return _page([self._render(m) for m in thread], params, default_limit=1000)

    def _conversations_history(self, params: Json) -> Json:
        channel = self._readable_channel(params.get("channel"))
        oldest, latest = str(params.get("oldest") or "0"), str(params.get("latest") or "9999999999.999999")
        top = [m for m in reversed(self.messages) if m["channel"] == channel.id
               and m.get("thread_ts") in (None, m["ts"]) and oldest < m["ts"] < latest]
        return _page([self._render(m) for m in top], params, default_limit=100)

    def _conversations_join(self, params: Json) -> Json:
        channel = self._channel(params.get("channel"))
        if channel.is_im:
            raise SlackError("method_not_supported_for_channel_type")
        channel.bot_member = True
        return {"channel": channel.to_wire()}

    def _conversations_info(self, params: Json) -> Json:
        return {"channel": self._channel(params.get("channel")).to_wire()}

    def _users_info(self, params: Json) -> Json:
        user = self.users.get(_required(params, "user"))
        if user is None:
            raise SlackError("user_not_found")
        return {"user": user}

    def _views_publish(self, params: Json) -> Json:
        user_id = _required(params, "user_id")
        if user_id not in self.users:
            raise SlackError("user_not_found")
        view = params.get("view")
        if not isinstance(view, dict) or view.get("type") != "home":
            raise SlackError("invalid_arguments",
                             response_metadata={"messages": ["[ERROR] view.type must be home"]})
        errors = block_errors(view.get("blocks", []), max_blocks=MAX_VIEW_BLOCKS)
        if errors:
            raise SlackError("invalid_arguments",
                             response_metadata={"messages": [f"[ERROR] {e}" for e in errors]})
        published = {**view, "id": f"V{next(self._id_counter):08d}", "team_id": self.team_id,
                     "app_id": self.app_id, "bot_id": self.bot_id, "hash": uuid.uuid4().hex[:16]}
        self.published_views.append({"user_id": user_id, "view": published})
        return {"view": published}

    def _reactions_add(self, params: Json) -> Json:
        channel = self._channel(params.get("channel"))
        msg = self._message(channel.id, _required(params, "timestamp"))
        name = _required(params, "name")
        reactions: list[Json] = msg.setdefault("reactions", [])
        reaction = next((r for r in reactions if r["name"] == name), None)
        if reaction is None:
            reaction = {"name": name, "users": [], "count": 0}
            reactions.append(reaction)
        if self.bot_user_id in reaction["users"]:
            raise SlackError("already_reacted")
        reaction["users"].append(self.bot_user_id)
        reaction["count"] += 1
        return {}

    def _set_status(self, params: Json) -> Json:
        channel = self._writable_channel(params.get("channel_id"))
        thread_ts = _required(params, "thread_ts")
        status = str(params.get("status") or "")
        if status:
            self.statuses[(channel.id, thread_ts)] = status
        else:
            self.statuses.pop((channel.id, thread_ts), None)
        return {}

    def _set_suggested_prompts(self, params: Json) -> Json:
        channel = self._writable_channel(params.get("channel_id"))
        prompts = params.get("prompts")
        if (not isinstance(prompts, list) or not 1 <= len(prompts) <= MAX_SUGGESTED_PROMPTS
                or not all(isinstance(p, dict) and p.get("title") and p.get("message") for p in prompts)):
            raise SlackError("invalid_arguments")
        self.suggested_prompts.append({**params, "channel_id": channel.id})
        return {}

    def _chat_start_stream(self, params: Json) -> Json:
        channel = self._writable_channel(params.get("channel"))
        if not self.streaming_enabled:
            raise SlackError(STREAMING_REFUSED)
        thread_ts = _required(params, "thread_ts")
        if not channel.is_im:
            _required(params, "recipient_user_id")
            _required(params, "recipient_team_id")
        msg = self._store_bot_message(channel.id, _stream_markdown(params), None, thread_ts)
        self._streaming.add((channel.id, msg["ts"]))
        return {"channel": channel.id, "ts": msg["ts"]}

    def _streamed_message(self, params: Json) -> Json:
        channel = self._channel(params.get("channel"))
        msg = self._message(channel.id, _required(params, "ts"))
        if (channel.id, msg["ts"]) not in self._streaming:
            raise SlackError("message_not_in_streaming_state")
        return msg

    def _chat_append_stream(self, params: Json) -> Json:
        msg = self._streamed_message(params)
        msg["text"] += _stream_markdown(params)
        return {"channel": msg["channel"], "ts": msg["ts"]}

    def _chat_stop_stream(self, params: Json) -> Json:
        msg = self._streamed_message(params)
        text = msg["text"] + _stream_markdown(params)
        blocks = params.get("blocks")
        if blocks is not None:
            errors = block_errors(blocks)
            if errors:
                raise SlackError("invalid_blocks", errors=errors)
            msg["blocks"] = _with_block_ids(blocks)
        msg["text"] = text
        self._streaming.discard((msg["channel"], msg["ts"]))
        return {"channel": msg["channel"], "ts": msg["ts"], "message": self._render(msg)}

    # ---------------------------------------------------------------- message store

    def _channel(self, ref: Any) -> Channel:
        """Resolve a channel id, "#name"/name, or a user id (its DM), as Slack's channel argument does."""
        if not isinstance(ref, str) or not ref:
            raise SlackError("channel_not_found")
        if ref in self.channels:
            return self.channels[ref]
        if ref in self.users:
            return self._im_for(ref)
        name = ref.removeprefix("#")
        found = next((c for c in self.channels.values() if not c.is_im and c.name == name), None)
        if found is None:
            raise SlackError("channel_not_found")
        return found

    def _writable_channel(self, ref: Any) -> Channel:
        channel = self._channel(ref)
        if not channel.bot_member:
            raise SlackError("not_in_channel")
        return channel

    _readable_channel = _writable_channel  # bots read history only where they are members

    def _im_for(self, user: str) -> Channel:
        found = next((c for c in self.channels.values() if c.is_im and c.user == user), None)
        return found or self.add_channel(f"D{user}", is_im=True, user=user)

    def _message(self, channel: str, ts: str) -> Json:
        msg = self._messages.get((channel, ts))
        if msg is None:
            raise SlackError("message_not_found")
        return msg

    def _next_ts(self) -> str:
        us = FIRST_TS_US + 100 * next(self._ts_counter)
        return f"{us // 1_000_000}.{us % 1_000_000:06d}"

    def _trigger_id(self) -> str:
        return f"{next(self._id_counter)}.{self.team_id}.{uuid.uuid4().hex[:20]}"

    def _new_response_url(self, target: _ResponseUrl) -> str:
        key = uuid.uuid4().hex
        self._response_urls[key] = target
        return f"{self.url}/response_url/{key}"

    def _store_user_message(self, channel: str, user: str, text: str, thread_ts: str | None) -> Json:
        if channel not in self.channels:
            raise ValueError(f"unknown channel {channel}: call add_channel first")
        msg: Json = {"type": "message", "channel": channel, "user": user, "text": text, "ts": self._next_ts(),
                     "team": self._team_of(user), "client_msg_id": str(uuid.uuid4()), "blocks": None}
        if thread_ts:
            msg["thread_ts"] = thread_ts
        self._messages[(channel, msg["ts"])] = msg
        return msg

    def _store_bot_message(
        self, channel: str, text: str, blocks: list[Json] | None, thread_ts: str | None
    ) -> Json:
        msg: Json = {"type": "message", "channel": channel, "user": self.bot_user_id, "bot_id": self.bot_id,
                     "app_id": self.app_id, "text": text, "ts": self._next_ts(), "team": self.team_id,
                     "blocks": blocks,
                     "bot_profile": {"id": self.bot_id, "name": "askdocs", "app_id": self.app_id}}
        if thread_ts:
            msg["thread_ts"] = thread_ts
            self.statuses.pop((channel, thread_ts), None)  # Slack clears the loading status on a reply
        self._messages[(channel, msg["ts"])] = msg
        return msg

    def _user_event(self, kind: str, msg: Json) -> Json:
        event = {"type": kind, "user": msg["user"], "text": msg["text"], "ts": msg["ts"],
                 "channel": msg["channel"], "event_ts": msg["ts"], "team": msg["team"],
                 "user_team": msg["team"], "source_team": msg["team"], "client_msg_id": msg["client_msg_id"]}
        if "thread_ts" in msg:
            event["thread_ts"] = msg["thread_ts"]
        return event

    def _team_of(self, user_id: str) -> str:
        """A Slack Connect user's own workspace; this workspace for everyone else."""
        return str(self.users.get(user_id, {}).get("team_id") or self.team_id)

    def _render(self, msg: Json) -> Json:
        """Wire form of a stored message: no channel key, thread metadata on a parent, no null blocks."""
        out = {k: copy.deepcopy(v) for k, v in msg.items() if k != "channel" and v is not None}
        replies = [m for m in self.messages if m["channel"] == msg["channel"]
                   and m.get("thread_ts") == msg["ts"] and m["ts"] != msg["ts"]]
        if replies:
            out |= {"thread_ts": msg["ts"], "reply_count": len(replies),
                    "reply_users": sorted({r["user"] for r in replies}), "latest_reply": replies[-1]["ts"]}
        return out


def _required(params: Json, name: str) -> str:
    value = params.get(name)
    if not value:
        raise SlackError("invalid_arguments", response_metadata={"messages": [f"[ERROR] missing {name}"]})
    return str(value)


def _decode_json_params(params: Json) -> Json:
    """Form-encoded calls carry blocks/view as JSON strings; decode them so checks and tests see lists."""
    out = dict(params)
    for name in JSON_STRING_PARAMS:
        if isinstance(out.get(name), str):
            try:
                out[name] = json.loads(out[name])
            except json.JSONDecodeError:
                error = "invalid_blocks_format" if name == "blocks" else "invalid_arguments"
                raise SlackError(error) from None
    return out


def _message_content(params: Json, *, allow_empty: bool = False) -> tuple[str, list[Json] | None]:
    """(text, blocks) after Slack's checks: no_text, msg_too_long, invalid_blocks."""
    text = str(params.get("text") or "")
    blocks = params.get("blocks")
    if not text and not blocks and not params.get("attachments") and not allow_empty:
        raise SlackError("no_text")
    if len(text) > MAX_TEXT_CHARS:
        raise SlackError("msg_too_long")
    if blocks is not None:
        errors = block_errors(blocks)
        if errors:
            raise SlackError("invalid_blocks", errors=errors,
                             response_metadata={"messages": [f"[ERROR] {e}" for e in errors]})
        blocks = _with_block_ids(blocks)
    return text, blocks


def _with_block_ids(blocks: list[Json]) -> list[Json]:
    """Copy blocks, giving each a block_id as Slack does when the app sets none."""
    out = copy.deepcopy(blocks)
    for i, block in enumerate(out):
        block.setdefault("block_id", f"b{i}{uuid.uuid4().hex[:4]}")
    return out


def _block_id_of(blocks: list[Json], action_id: str) -> str | None:
    for block in blocks:
        for element in block.get("elements") or []:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                return str(block.get("block_id"))
        accessory = block.get("accessory")
        if isinstance(accessory, dict) and accessory.get("action_id") == action_id:
            return str(block.get("block_id"))
    return None


def _element_type_of(blocks: list[Json], action_id: str) -> str | None:
    for block in blocks:
        for element in block.get("elements") or []:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                return str(element.get("type"))
    return None


def _stream_markdown(params: Json) -> str:
    """The markdown a streaming call carries: `markdown_text`, or `chunks` of type markdown_text."""
    text = str(params.get("markdown_text") or "")
    chunks = params.get("chunks")
    if isinstance(chunks, str):
        try:
            chunks = json.loads(chunks)
        except json.JSONDecodeError:
            raise SlackError("invalid_chunks") from None
    for chunk in chunks or []:
        if not isinstance(chunk, dict):
            raise SlackError("invalid_chunks")
        if chunk.get("type") == "markdown_text":
            text += str(chunk.get("text") or "")
    if len(text) > MAX_STREAM_MARKDOWN_CHARS:
        raise SlackError("msg_too_long")
    return text


def _page(items: list[Json], params: Json, *, default_limit: int) -> Json:
    """Cursor pagination as Slack's: `limit`, an opaque base64 `cursor`, `response_metadata.next_cursor`."""
    limit = int(params.get("limit") or default_limit)
    cursor = params.get("cursor")
    start = int(base64.b64decode(cursor).decode().removeprefix("offset:")) if cursor else 0
    page = items[start:start + limit]
    more = start + limit < len(items)
    next_cursor = base64.b64encode(f"offset:{start + limit}".encode()).decode() if more else ""
    return {"messages": page, "has_more": more, "response_metadata": {"next_cursor": next_cursor}}
