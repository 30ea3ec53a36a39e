"""Bolt middleware: drop redeliveries, duplicate event ids and bot messages; admin allowlist for /docsync.

Why: in Socket Mode Slack redelivers an envelope whose ack was late or lost (`retry_attempt`, mirrored by Bolt
as the `x-slack-retry-num` header, "0" on a first delivery) with the same `event_id`. Answering twice is the
complaint users voice most, after silence. A dropped request is still acked (a 200 response), or Slack would
keep retrying it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any

from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

logger = logging.getLogger(__name__)

Next = Callable[[], Awaitable[None]]


class SeenEvents:
    """A bounded LRU of event ids: `first_time(id)` is True once per id (while it stays remembered)."""

    def __init__(self, max_size: int = 10_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._max_size = max_size

    def first_time(self, event_id: str) -> bool:
        if event_id in self._ids:
            self._ids.move_to_end(event_id)
            return False
        self._ids[event_id] = None
        if len(self._ids) > self._max_size:
            self._ids.popitem(last=False)
        return True


def retry_number(headers: Mapping[str, Sequence[str] | str]) -> int:
    """Slack's retry count from `x-slack-retry-num` (0 for a first delivery or when absent)."""
    value = headers.get("x-slack-retry-num")
    raw = value if isinstance(value, str) else (value[0] if value else "0")
    try:
        return int(raw)
    except ValueError:
        return 0


def from_a_bot(event: Mapping[str, Any], *, bot_user_id: str | None = None) -> bool:
    """Messages written by bots (ours included): never answered, so bots can't talk to each other in loops."""
    if event.get("bot_id") or event.get("subtype") == "bot_message":
        return True
    return bot_user_id is not None and event.get("user") == bot_user_id and event.get("type") == "message"


def acknowledged() -> BoltResponse:
    """An empty 200: Bolt's Socket Mode adapter sends it as the envelope ack."""
    return BoltResponse(status=200, body="")


class EventFilter:
    """Global middleware: each event_id is handled once; bot-authored events are acked and dropped."""

    def __init__(self, seen: SeenEvents) -> None:
        self._seen = seen

    async def __call__(self, req: AsyncBoltRequest, resp: BoltResponse, next: Next) -> BoltResponse | None:
        body = req.body
        if body.get("type") != "event_callback":
            await next()
            return None
        event = body.get("event") or {}
        event_id = str(body.get("event_id") or "")
        retry = retry_number(req.headers)
        if event_id and not self._seen.first_time(event_id):
            logger.info("event %s (%s) delivered again, retry %d: already handled", event_id,
                        event.get("type"), retry)
            return acknowledged()
        if retry > 0:
            # A retry of an event this process never saw: its first delivery was lost (e.g. during a
            # reconnect), so answering it is the only way the user gets an answer.
            logger.info("Slack retry %d of unseen event %s (%s): handling it", retry, event_id,
                        body.get("retry_reason") or "-")
        if from_a_bot(event, bot_user_id=req.context.bot_user_id):
            return acknowledged()
        await next()
        return None


class AdminOnly:
    """Listener middleware: only `admins` pass; anyone else gets `refusal` as an ephemeral ack."""

    def __init__(self, admins: Collection[str], refusal: str) -> None:
        self._admins = frozenset(admins)
        self._refusal = refusal

    async def __call__(self, req: AsyncBoltRequest, resp: BoltResponse, next: Next) -> BoltResponse | None:
        user_id = str(req.body.get("user_id") or "")
        if user_id in self._admins:
            await next()
            return None
        logger.info("%s refused for %s: not in SLACK_ADMIN_USERS", req.body.get("command"), user_id or "-")
        return BoltResponse(status=200, body={"response_type": "ephemeral", "text": self._refusal})
