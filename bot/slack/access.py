"""Who may ask askdocs in Slack, and whose pages an answer may use (issue 15).

`AccessGuard` (global Bolt middleware, after the duplicate filter) refuses Slack guests (users.info
`is_restricted` / `is_ultra_restricted`) and people of another workspace (Slack Connect: the event's
`user_team` differs from the app's team) on every surface — mention, DM, thread follow-up, `/askdocs`,
`/docsync`, buttons — with a visible, link-free reply, unless SLACK_ALLOW_GUESTS / SLACK_ALLOW_EXTERNAL.
A user whose account can't be checked is refused too (fail closed). users.info answers are cached.

`SlackAccess.audience`: in a DM the asker's own Confluence access (Slack email → Confluence account); in any
channel only organisation-wide pages, since everyone there reads the answer.
`SlackAccess.spaces`: `in:SPACE` narrows a channel's SLACK_CHANNEL_SPACES entry, and widens it only where the
entry isn't locked (`C123:HR!`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.operations.identity import Identity
from bot.settings import Settings
from bot.slack.middleware import SeenEvents, acknowledged
from bot.slack.streaming import BackgroundTasks, slack_error
from db.models import Audience

logger = logging.getLogger(__name__)

Next = Callable[[], Awaitable[None]]
Json = dict[str, Any]

GUEST_REFUSAL = ("Sorry, askdocs answers members of this workspace only, and guest accounts can't use it. "
                 "Please ask the person who invited you.")
EXTERNAL_REFUSAL = ("Sorry, askdocs answers members of this workspace only, so it can't help people from "
                    "other organisations here. Please ask your contact at this company.")
UNVERIFIED_REFUSAL = "Sorry, askdocs couldn't check your account just now, so it can't answer. Please try again."
ANSWERED_SUBTYPES = frozenset({None, "thread_broadcast", "file_share"})


@dataclass(frozen=True)
class Asker:
    """Who asked on an answering surface, and where a refusal goes."""

    surface: str  # mention | dm | followup | command | action
    user_id: str
    user_team: str | None
    channel: str | None
    thread_ts: str | None = None


class SlackUsers:
    """users.info, cached for `ttl_s` (a guest turned member is answered after at most that long)."""

    def __init__(self, *, ttl_s: float = 600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._users: dict[str, tuple[float, Json]] = {}

    async def info(self, client: AsyncWebClient, user_id: str) -> Json:
        """The user object; raises SlackApiError when Slack can't say."""
        now = self._clock()
        cached = self._users.get(user_id)
        if cached is not None and now - cached[0] < self._ttl_s:
            return cached[1]
        user = dict((await client.users_info(user=user_id)).get("user") or {})
        self._users[user_id] = (now, user)
        return user


def asker_of(body: Json, *, bot_user_id: str | None) -> Asker | None:
    """The asker of a request that askdocs would answer or act on; None for anything else."""
    kind = body.get("type")
    if kind == "event_callback":
        event = body.get("event") or {}
        user, channel = str(event.get("user") or ""), str(event.get("channel") or "")
        team = event.get("user_team") or event.get("team")
        if not user or event.get("subtype") not in ANSWERED_SUBTYPES:
            return None
        thread_ts = str(event.get("thread_ts") or event.get("ts") or "")
        if event.get("type") == "app_mention":
            return Asker("mention", user, team, channel, thread_ts)
        if event.get("type") != "message":
            return None
        if event.get("channel_type") == "im":
            return Asker("dm", user, team, channel, thread_ts)
        mentioned = bool(bot_user_id) and f"<@{bot_user_id}>" in str(event.get("text") or "")
        if event.get("thread_ts") and event.get("thread_ts") != event.get("ts") and not mentioned:
            return Asker("followup", user, team, channel, thread_ts)
        return None
    if body.get("command"):
        # A command's team_id is the workspace it was run in: users.info tells a Slack Connect user apart.
        return Asker("command", str(body.get("user_id") or ""), body.get("team_id"), str(body.get("channel_id") or ""))
    if kind == "block_actions":
        clicker: Json = body.get("user") or {}
        where = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        return Asker("action", str(clicker.get("id") or ""),
                     clicker.get("team_id") or (body.get("team") or {}).get("id"), str(where or ""),
                     (body.get("message") or {}).get("thread_ts"))
    return None


def app_team_of(req: AsyncBoltRequest) -> str | None:
    """The workspace askdocs is installed in: its auth.test identity, else the event's authorizations."""
    result = req.context.authorize_result
    if result is not None and result.team_id:
        return str(result.team_id)
    authorizations = req.body.get("authorizations") or [{}]
    return authorizations[0].get("team_id") or req.context.team_id


class AccessGuard:
    """Global middleware: guests and external users get a polite refusal instead of an answer."""

    def __init__(self, access: SlackAccess, *, tasks: BackgroundTasks) -> None:
        self._access = access
        self._tasks = tasks
        self._refused = SeenEvents()  # a mention can arrive as app_mention and as message: refuse once

    async def __call__(self, req: AsyncBoltRequest, resp: BoltResponse, next: Next) -> BoltResponse | None:
        asker = asker_of(req.body, bot_user_id=req.context.bot_user_id)
        if asker is None or not asker.user_id:
            await next()
            return None
        client: AsyncWebClient = req.context.client
        refusal = await self._access.refusal_for(client, asker, app_team=app_team_of(req))
        if refusal is None:
            await next()
            return None
        logger.info("%s by %s refused: %s", asker.surface, asker.user_id, refusal[:40])
        if asker.surface == "command":
            return BoltResponse(status=200, body={"response_type": "ephemeral", "text": refusal})
        what = (req.body.get("event") or {}).get("ts") or req.body.get("trigger_id") or ""
        if self._refused.first_time(f"{asker.channel}:{what}:{asker.user_id}"):
            self._tasks.spawn(self._reply(client, asker, refusal, bot_user_id=req.context.bot_user_id),
                              name="askdocs-refusal")
        return acknowledged()

    async def _reply(self, client: AsyncWebClient, asker: Asker, text: str, *, bot_user_id: str | None) -> None:
        try:
            if asker.surface == "action":
                await client.chat_postEphemeral(channel=str(asker.channel), user=asker.user_id, text=text,
                                                thread_ts=asker.thread_ts)
                return
            if asker.surface == "followup" and not await self._bot_in_thread(client, asker, bot_user_id):
                return  # a conversation askdocs isn't part of: nothing was asked of it
            await client.chat_postMessage(channel=str(asker.channel), thread_ts=asker.thread_ts, text=text)
        except SlackApiError as error:
            logger.warning("could not post a refusal in %s: %s", asker.channel, slack_error(error))

    @staticmethod
    async def _bot_in_thread(client: AsyncWebClient, asker: Asker, bot_user_id: str | None) -> bool:
        page = await client.conversations_replies(channel=str(asker.channel), ts=str(asker.thread_ts), limit=200)
        return any(m.get("user") == bot_user_id for m in page.get("messages") or [])


class SlackAccess:
    """The Slack side of who sees what: refusals, audiences, channel scoping."""

    def __init__(self, settings: Settings, identity: Identity, *, users: SlackUsers | None = None) -> None:
        self._settings = settings
        self._identity = identity
        self._users = users or SlackUsers()
        self._mapping = settings.channel_spaces
        self._locked = settings.locked_channels

    async def refusal_for(self, client: AsyncWebClient, asker: Asker, *, app_team: str | None) -> str | None:
        """Why this asker can't be answered (the reply text), or None when they can."""
        allow_guests, allow_external = self._settings.slack_allow_guests, self._settings.slack_allow_external
        if not allow_external and asker.user_team and app_team and asker.user_team != app_team:
            return EXTERNAL_REFUSAL
        if allow_guests and allow_external:
            return None
        try:
            user = await self._users.info(client, asker.user_id)
        except SlackApiError as error:
            logger.warning("users.info for %s failed (%s): refusing rather than guessing", asker.user_id,
                           slack_error(error))
            return UNVERIFIED_REFUSAL
        if not allow_external and (user.get("is_stranger") or (
                app_team and user.get("team_id") and user.get("team_id") != app_team)):
            return EXTERNAL_REFUSAL
        if not allow_guests and (user.get("is_restricted") or user.get("is_ultra_restricted")):
            return GUEST_REFUSAL
        return None

    async def audience(self, client: AsyncWebClient, *, user: str | None, channel: str) -> Audience | None:
        """A DM: the asker's own access; any other conversation: the organisation's. None in public mode."""
        if not self._identity.per_user:
            return None
        if not channel.startswith("D") or not user:
            return self._identity.organisation()
        try:
            profile = (await self._users.info(client, user)).get("profile") or {}
        except SlackApiError as error:
            logger.warning("users.info for %s failed (%s): organisation-wide pages only", user, slack_error(error))
            return self._identity.organisation()
        return await self._identity.for_email(profile.get("email"))

    def spaces(self, scope: Sequence[str] | None, channel: str) -> list[str] | None:
        """The spaces an answer in `channel` searches: `in:` scope, narrowed to a locked channel's spaces."""
        mapped = self._mapping.get(channel)
        if channel in self._locked and mapped:
            narrowed = [s for s in scope or () if s in mapped]
            return narrowed or list(mapped)
        return list(scope) if scope else mapped
