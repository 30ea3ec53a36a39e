"""Slack listeners: each acks first (Bolt acks events itself before a listener runs) and hands the slow work
to a tracked background task, so the 3-second ack rule holds however long an answer takes.

Errors end at this boundary: the user sees a short apology with a reference id, the log has the traceback
under the same id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.answering.models import Answer, AskContext, QuestionError, Turn
from bot.services import Services
from bot.slack import blocks
from bot.slack.access import SlackAccess
from bot.slack.budget import RateBudget
from bot.slack.home import HomeTab
from bot.slack.middleware import SeenEvents, from_a_bot
from bot.slack.mrkdwn import parse_scope, slack_to_plain
from bot.slack.streaming import (
    AnswerReply,
    BackgroundTasks,
    BotThreads,
    ReplyTo,
    WorkspaceFeatures,
    new_ref,
    slack_error,
)
from db import activity, claims
from db.models import Audience
from ingest.errors import one_line

logger = logging.getLogger(__name__)

Event = dict[str, Any]
HistoryLoader = Callable[[], Awaitable[list[Turn]]]
CANT_POST_HERE = frozenset({"not_in_channel", "channel_not_found"})
ANSWERED_SUBTYPES = frozenset({None, "thread_broadcast", "file_share"})


class SlackListeners:
    """The answering listeners (mentions, DMs, thread follow-ups, /askdocs, feedback, App Home)."""

    def __init__(
        self, services: Services, *, tasks: BackgroundTasks, home: HomeTab, budget: RateBudget,
        features: WorkspaceFeatures, max_concurrent_answers: int = 8, stream_interval_s: float = 1.0,
        access: SlackAccess | None = None,
    ) -> None:
        self._services = services
        self._access = access or SlackAccess(services.settings, services.identity)
        self._settings = services.settings
        self._tasks = tasks
        self._home = home
        self._budget = budget
        self._features = features
        self._answer_slots = asyncio.Semaphore(max_concurrent_answers)
        self._stream_interval_s = stream_interval_s
        self._threads = BotThreads()
        # One user message can arrive as app_mention and as message (a mention in a DM, or in a channel when
        # message.channels is subscribed): whichever comes first claims it.
        self._claimed = SeenEvents()

    # ---- listeners: fast, ack first, then delegate ------------------------------------------------------

    async def on_mention(self, event: Event, context: AsyncBoltContext, client: AsyncWebClient) -> None:
        """`@askdocs question` in a channel (acked by Bolt before this runs); answers in the thread."""
        if not self._claim(event):
            return
        self._tasks.spawn(self._answer_event(event, context, client, require_bot_thread=False),
                          name=f"askdocs-mention-{event.get('ts')}")

    async def on_message(self, event: Event, context: AsyncBoltContext, client: AsyncWebClient) -> None:
        """DMs, and replies without a mention in threads the bot takes part in."""
        if event.get("subtype") not in ANSWERED_SUBTYPES:
            return  # edits, deletions, joins…
        if from_a_bot(event, bot_user_id=context.bot_user_id):
            return
        channel_type = event.get("channel_type")
        if channel_type == "im":
            if not self._claim(event):
                return
            self._tasks.spawn(self._answer_event(event, context, client, require_bot_thread=False),
                              name=f"askdocs-dm-{event.get('ts')}")
        elif channel_type in ("channel", "group", "mpim"):  # group DMs keep their threads too
            thread_ts = event.get("thread_ts")
            if not thread_ts or thread_ts == event.get("ts"):
                return  # not a thread reply: only mentions are answered at the top level
            if context.bot_user_id and f"<@{context.bot_user_id}>" in str(event.get("text") or ""):
                return  # the app_mention event of the same message answers it
            if self._threads.known_without_bot(str(event["channel"]), str(thread_ts)):
                return
            if not self._claim(event):
                return
            self._tasks.spawn(self._answer_event(event, context, client, require_bot_thread=True),
                              name=f"askdocs-followup-{event.get('ts')}")

    async def on_askdocs(
        self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient,
    ) -> None:
        if not str(command.get("text") or "").strip():
            await ack(text=blocks.USAGE)
            return
        await ack()
        self._tasks.spawn(self._askdocs(command, respond, client), name="askdocs-command")

    async def on_feedback(
        self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond,
        client: AsyncWebClient,
    ) -> None:
        await ack()
        self._tasks.spawn(self._feedback(body, action, respond, client), name="askdocs-feedback")

    async def on_home_opened(self, event: Event, client: AsyncWebClient) -> None:
        tab = event.get("tab", "home")
        if tab == "home" and event.get("user"):
            self._tasks.spawn(self._home.publish(client, str(event["user"])), name="askdocs-home")
        elif tab == "messages" and event.get("channel"):
            # The agent's conversation (features.agent_view): offer a few questions to start with.
            self._tasks.spawn(self._suggest_prompts(client, str(event["channel"])), name="askdocs-prompts")

    async def _suggest_prompts(self, client: AsyncWebClient, channel: str) -> None:
        try:
            await client.assistant_threads_setSuggestedPrompts(
                channel_id=channel, title=blocks.SUGGESTED_PROMPTS_TITLE, prompts=blocks.suggested_prompts())
        except SlackApiError as error:
            logger.warning("could not suggest prompts in %s: %s", channel, slack_error(error))

    def _claim(self, event: Event) -> bool:
        return self._claimed.first_time(f"{event.get('channel')}:{event.get('ts')}")

    async def _claim_across_replicas(self, event: Event) -> bool:
        """The first replica on this database to claim a message answers it (issue 16).

        Slack redelivers an event whose ack was slow to any open connection, and two replicas each hold one:
        the in-process claim can't see the other replica's. If the claim fails for any reason, answer anyway:
        two answers beat none, and the answer path apologises in the thread if the database is really gone.
        """
        key = f"slack message {event.get('channel')}:{event.get('ts')}"
        try:
            async with self._services.database.pool.acquire() as conn:
                first = await claims.claim_once(conn, key)
        except Exception as error:  # whatever the database says, the answer path apologises properly
            logger.warning("could not claim %s: %s", key, one_line(error))
            return True
        if not first:
            logger.info("%s is answered by another replica", key)
        return first

    # ---- answering ----------------------------------------------------------------------------------------

    async def _answer_event(
        self, event: Event, context: AsyncBoltContext, client: AsyncWebClient, *, require_bot_thread: bool,
    ) -> None:
        if not await self._claim_across_replicas(event):
            return
        channel, ts = str(event["channel"]), str(event["ts"])
        thread_ts = str(event.get("thread_ts") or ts)
        in_thread = thread_ts != ts
        bot_user_id, bot_id = context.bot_user_id, context.bot_id
        scope, question = parse_scope(slack_to_plain(str(event.get("text") or ""), bot_user_id=bot_user_id))
        spaces = self._access.spaces(scope, channel)
        load_history: HistoryLoader | None = None
        if require_bot_thread:
            try:
                messages = await self._thread_messages(client, channel, thread_ts)
            except SlackApiError as error:
                logger.warning("could not read thread %s/%s: %s", channel, thread_ts, slack_error(error))
                return
            turns, answered_here = blocks.thread_turns(
                messages, before_ts=ts, bot_user_id=bot_user_id, bot_id=bot_id)
            self._threads.mark(channel, thread_ts, answered_here)
            if not answered_here:
                return

            async def known_turns() -> list[Turn]:
                return turns

            load_history = known_turns
        elif in_thread:
            async def fetched_turns() -> list[Turn]:
                try:
                    messages = await self._thread_messages(client, channel, thread_ts)
                except SlackApiError as error:  # answer without context rather than not at all
                    logger.warning("could not read thread %s/%s: %s", channel, thread_ts, slack_error(error))
                    return []
                turns, _ = blocks.thread_turns(
                    messages, before_ts=ts, bot_user_id=bot_user_id, bot_id=bot_id)
                return turns

            load_history = fetched_turns
        to = ReplyTo(channel, thread_ts, event.get("user"), context.team_id or event.get("team"),
                     recipient_team_id=event.get("user_team") or event.get("team") or context.team_id)
        await self._answer_in_thread(client, to, question=question, spaces=spaces, load_history=load_history)

    async def _thread_messages(self, client: AsyncWebClient, channel: str, thread_ts: str) -> list[Event]:
        messages: list[Event] = []
        cursor: str | None = None
        for _ in range(5):  # threads past 1,000 messages: the oldest 1,000 are context enough
            page = await client.conversations_replies(channel=channel, ts=thread_ts, limit=200, cursor=cursor)
            messages += page.get("messages") or []
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                break
        return messages

    async def _answer_in_thread(
        self, client: AsyncWebClient, to: ReplyTo, *, question: str, spaces: Sequence[str] | None,
        load_history: HistoryLoader | None,
    ) -> None:
        """Slack's loading status now, then the answer streamed into one message; any failure ends as an
        apology in its place."""
        channel, thread_ts = to.channel, to.thread_ts
        reply = AnswerReply(client, to, budget=self._budget, features=self._features,
                            min_interval_s=self._stream_interval_s)
        try:
            await reply.show_status()
        except Exception:
            logger.exception("could not post in %s/%s [ref %s]", channel, thread_ts, new_ref())
            return
        self._threads.mark(channel, thread_ts, True)
        context = AskContext("slack", user_id=to.user_id, channel_id=channel, thread_ts=thread_ts)
        refresh: asyncio.Task[list[str]] | None = None
        history: list[Turn] = []
        answered: Answer | None = None
        audience = None
        try:
            audience = await self._access.audience(client, user=to.user_id, channel=channel)
            history = await load_history() if load_history else []
            async with self._answer_slots:
                result = await self._services.engine.answer(
                    question, history=history, spaces=spaces, on_delta=reply.on_delta, context=context,
                    audience=audience,
                )
            if self._services.freshness is not None:
                try:
                    reviewed = await self._services.freshness.review(result)
                    result, refresh = reviewed.answer, reviewed.refresh
                except Exception:  # the answer still goes out, unreviewed
                    logger.exception("freshness check failed in %s/%s [ref %s]", channel, thread_ts, new_ref())
            message = blocks.answer(result, nonce=new_ref())
            answered = result
        except QuestionError as error:
            message = blocks.problem(str(error), nonce=new_ref())
        except Exception:
            ref = new_ref()
            logger.exception("answering in %s/%s failed [ref %s]", channel, thread_ts, ref)
            message = blocks.apology(ref, nonce=new_ref())
        try:
            await reply.finish(message, result=answered)
        except Exception:
            ref = new_ref()
            logger.exception("could not show the answer in %s/%s [ref %s]", channel, thread_ts, ref)
            await self._post_quietly(client, channel, thread_ts, blocks.apology(ref))
            await reply.clear_status()
            return
        if refresh is not None:
            await self._refresh_answer(reply, refresh, question=question, history=history, spaces=spaces,
                                       context=context, audience=audience)

    async def _refresh_answer(
        self, reply: AnswerReply, refresh: asyncio.Task[list[str]], *, question: str,
        history: list[Turn], spaces: Sequence[str] | None, context: AskContext, audience: Audience | None,
    ) -> None:
        """A cited page changed after indexing: once it is re-indexed, answer again in the same message."""
        try:
            if not await refresh:
                return
            async with self._answer_slots:
                result = await self._services.engine.answer(question, history=history, spaces=spaces,
                                                            context=context, audience=audience)
            note = "Refreshed: a cited page was updated in Confluence and has been re-indexed."
            await reply.replace(blocks.answer(dataclasses.replace(result, note=note), nonce=new_ref()))
        except Exception:
            logger.exception("could not refresh the answer in %s/%s [ref %s]", reply.to.channel, reply.ts,
                             new_ref())

    async def _post_quietly(self, client: AsyncWebClient, channel: str, thread_ts: str,
                            message: blocks.Message) -> None:
        try:
            await client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=message["text"])
        except Exception:
            logger.exception("could not post the apology in %s/%s either", channel, thread_ts)

    async def _askdocs(self, command: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient) -> None:
        user, channel = str(command["user_id"]), str(command["channel_id"])
        text = slack_to_plain(str(command.get("text") or ""))
        scope, question = parse_scope(text)
        spaces = self._access.spaces(scope, channel)
        try:
            posted = await client.chat_postMessage(channel=channel, **blocks.asked(user, text, nonce=new_ref()))
        except SlackApiError as error:
            if slack_error(error) not in CANT_POST_HERE:
                ref = new_ref()
                logger.exception("/askdocs: could not post in %s [ref %s]", channel, ref)
                await respond(response_type="ephemeral", **blocks.apology(ref))
                return
            await self._askdocs_via_response_url(respond, client, user=user, channel=channel, text=text,
                                                 question=question, spaces=spaces)
            return
        team = str(command.get("team_id") or "") or None
        await self._answer_in_thread(client, ReplyTo(channel, str(posted["ts"]), user, team), question=question,
                                     spaces=spaces, load_history=None)

    async def _askdocs_via_response_url(
        self, respond: AsyncRespond, client: AsyncWebClient, *, user: str, channel: str, text: str,
        question: str, spaces: Sequence[str] | None,
    ) -> None:
        """The bot isn't in this conversation: answer through the command's response_url instead."""
        try:
            audience = await self._access.audience(client, user=user, channel=channel)
            async with self._answer_slots:
                result = await self._services.engine.answer(
                    question, spaces=spaces, context=AskContext("slack", user_id=user, channel_id=channel),
                    audience=audience)
            await respond(response_type="in_channel", replace_original=False,
                          **blocks.asked_with_answer(user, text, result))
        except QuestionError as error:
            await respond(response_type="ephemeral", **blocks.problem(str(error)))
        except Exception:
            ref = new_ref()
            logger.exception("/askdocs in %s failed [ref %s]", channel, ref)
            await respond(response_type="ephemeral", **blocks.apology(ref))

    # ---- feedback ---------------------------------------------------------------------------

    async def _feedback(
        self, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient,
    ) -> None:
        user = str(body["user"]["id"])
        container = body.get("container") or {}
        channel = str((body.get("channel") or {}).get("id") or container.get("channel_id"))
        thread_ts = (body.get("message") or {}).get("thread_ts")
        try:
            query_id, value = blocks.feedback_vote(action)
            async with self._services.database.pool.acquire() as conn:
                await activity.record_feedback(conn, query_id=query_id, user_id=user, value=value)
            text = blocks.FEEDBACK_THANKS
        except Exception:
            ref = new_ref()
            logger.exception("could not record feedback %r from %s [ref %s]", action.get("value"), user, ref)
            text = blocks.apology(ref)["text"]
        try:
            await client.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=thread_ts)
        except SlackApiError:  # e.g. an answer given through a response_url where the bot isn't a member
            await respond(text=text, response_type="ephemeral", replace_original=False)
