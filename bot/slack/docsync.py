"""`/docsync [SPACE …] [--force]`: admins start a sync and watch its progress and summary in the channel.

Everyone else is answered by the AdminOnly middleware before this runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.operations.sync_runner import AlreadyRunning, SyncRunner
from bot.slack import blocks, ops_blocks
from bot.slack.budget import RateBudget
from bot.slack.streaming import BackgroundTasks, new_ref, slack_error, write_final
from ingest.sync import Progress

logger = logging.getLogger(__name__)


class DocSync:
    def __init__(
        self, runner: SyncRunner, *, default_spaces: list[str], tasks: BackgroundTasks, budget: RateBudget,
        update_interval_s: float = 2.0,
    ) -> None:
        self._runner = runner
        self._budget = budget
        self._default_spaces = default_spaces
        self._tasks = tasks
        self._sync_update_interval_s = update_interval_s

    async def on_docsync(
        self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient,
    ) -> None:
        """Admins only (the AdminOnly middleware answers everyone else)."""
        await ack()
        self._tasks.spawn(self._docsync(command, respond, client), name="askdocs-docsync")


    async def _docsync(self, command: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient) -> None:
        user, channel = str(command["user_id"]), str(command["channel_id"])
        team = str(command.get("team_id") or "") or None
        words = str(command.get("text") or "").split()
        flags = [w for w in words if w.startswith("-")]
        if any(flag != "--force" for flag in flags):
            await respond(response_type="ephemeral", text="Usage: `/docsync [SPACE …] [--force]`")
            return
        spaces = list(dict.fromkeys(w.upper() for w in words if not w.startswith("-")))
        latest: list[Progress] = []

        async def record(run_id: int, step: Progress) -> None:
            latest[:] = [step]  # no I/O here: the sync must not wait for Slack

        try:
            started = await self._runner.start(
                spaces=spaces, force="--force" in flags, trigger="slack", requested_by=user, progress=record)
        except Exception:
            ref = new_ref()
            logger.exception("/docsync could not start [ref %s]", ref)
            await respond(response_type="ephemeral", **blocks.apology(ref))
            return
        if isinstance(started, AlreadyRunning):
            await respond(response_type="ephemeral", text=ops_blocks.sync_already_running(started.run))
            return
        shown = spaces or self._default_spaces
        ts: str | None = None
        try:
            ts = str((await client.chat_postMessage(
                channel=channel, **ops_blocks.sync_started(user, shown, started.run_id)))["ts"])
        except SlackApiError as error:
            logger.warning("/docsync: can't post in %s (%s); answering through response_url", channel,
                           slack_error(error))
            await respond(response_type="in_channel", **ops_blocks.sync_started(user, shown, started.run_id))
        last_edit: float | None = None
        shown_step: Progress | None = None
        while not started.task.done():
            await asyncio.wait({started.task}, timeout=self._sync_update_interval_s)
            if started.task.done() or ts is None or not latest or latest[0] == shown_step:
                continue
            # Progress shares chat.update's workspace budget with every answer: skipped when it is spent.
            if not self._budget.try_take(team, "chat.update"):
                continue
            shown_step = latest[0]
            try:
                await client.chat_update(channel=channel, ts=ts,
                                         **ops_blocks.sync_progress(user, shown, started.run_id, shown_step))
                last_edit = time.monotonic()
            except SlackApiError as error:
                logger.warning("/docsync progress update failed: %s", slack_error(error))
        try:
            outcome = await started.wait()
            summary = ops_blocks.sync_summary(user, outcome)
        except Exception:
            ref = new_ref()
            logger.exception("/docsync run #%s crashed [ref %s]", started.run_id, ref)
            summary = blocks.apology(ref)
        if ts is None:
            await respond(response_type="in_channel", **summary)
            return
        if last_edit is not None:
            await asyncio.sleep(max(0.0, last_edit + self._sync_update_interval_s - time.monotonic()))
        summary_ts = ts
        await write_final(lambda: client.chat_update(channel=channel, ts=summary_ts, **summary),
                          budget=self._budget, team_id=team, method="chat.update", where=channel)
