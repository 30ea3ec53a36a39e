"""The Slack emulator speaks real Slack: real Bolt (Socket Mode) and slack_sdk run on it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from tests.emulators.slack import SlackEmulator

FEEDBACK_BLOCKS = [
    {"type": "section", "text": {"type": "mrkdwn", "text": "Deploys need approval."}},
    {"type": "actions", "block_id": "feedback", "elements": [
        {"type": "button", "action_id": "helpful", "value": "yes",
         "text": {"type": "plain_text", "text": "Yes"}},
    ]},
]


def build_app(client: AsyncWebClient, seen_retries: list[str]) -> AsyncApp:
    """A tiny Bolt app with the listener kinds askdocs uses; `seen_retries` gets x-slack-retry-num headers."""
    app = AsyncApp(client=client)

    @app.middleware
    async def record_retries(req: Any, resp: Any, next: Any) -> Any:
        seen_retries.extend(req.headers.get("x-slack-retry-num", []))
        return await next()

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any], say: Any) -> None:
        await say(text=f"answer to: {event['text']}", thread_ts=event.get("thread_ts") or event["ts"])

    @app.event({"type": "message", "channel_type": "im"})
    async def on_dm(event: dict[str, Any], say: Any) -> None:
        await say(text=f"dm answer to: {event['text']}")

    @app.command("/askdocs")
    async def on_askdocs(ack: Any, command: dict[str, Any], say: Any, respond: Any) -> None:
        await ack(text="Searching…")
        await say(text=f"Q: {command['text']}", blocks=FEEDBACK_BLOCKS)
        await respond(text="only you see this")

    @app.action("helpful")
    async def on_helpful(ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        await client.chat_update(channel=body["channel"]["id"], ts=body["message"]["ts"],
                                 text=f"thanks ({body['actions'][0]['value']})", blocks=[])

    @app.event("app_home_opened")
    async def on_home(event: dict[str, Any], client: AsyncWebClient) -> None:
        view = {"type": "home", "blocks": FEEDBACK_BLOCKS[:1]}
        await client.views_publish(user_id=event["user"], view=view)

    return app


@pytest.fixture
async def slack() -> AsyncIterator[SlackEmulator]:
    async with SlackEmulator() as emulator:
        yield emulator


@pytest.fixture
async def client(slack: SlackEmulator) -> AsyncWebClient:
    web = AsyncWebClient(token=slack.bot_token, base_url=slack.base_url)
    web.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
    return web


@pytest.fixture
async def seen_retries() -> list[str]:
    return []


@pytest.fixture
async def handler(
    slack: SlackEmulator, client: AsyncWebClient, seen_retries: list[str]
) -> AsyncIterator[AsyncSocketModeHandler]:
    socket_mode = AsyncSocketModeHandler(build_app(client, seen_retries), slack.app_token)
    await socket_mode.connect_async()  # type: ignore[no-untyped-call]  # Bolt leaves these untyped
    yield socket_mode
    await socket_mode.close_async()  # type: ignore[no-untyped-call]


async def test_mention_is_acked_fast_and_answered_in_its_thread(
    slack: SlackEmulator, handler: AsyncSocketModeHandler, client: AsyncWebClient
) -> None:
    envelope_id, ts = await slack.mention("how do I deploy?")

    ack = await slack.wait_for_ack(envelope_id)
    reply = await slack.wait_for("chat.postMessage", lambda p: p.get("thread_ts") == ts)
    assert 0 <= ack.latency_s < 3
    assert reply["channel"] == "C1"
    thread = slack.messages_in_thread("C1", ts)
    assert [m["text"] for m in thread] == ["<@UBOT> how do I deploy?", "answer to: <@UBOT> how do I deploy?"]
    assert thread[1]["bot_id"] == "BBOT" and slack.bot_messages("C1") == thread[1:]

    replies = await client.conversations_replies(channel="C1", ts=ts)
    assert [m["ts"] for m in replies["messages"]] == [m["ts"] for m in thread]
    assert replies["messages"][0]["reply_count"] == 1
    follow_up, _ = await slack.mention("and rollbacks?", thread_ts=ts)
    await slack.wait_for_ack(follow_up)
    await slack.wait_for("chat.postMessage", lambda p: "rollbacks" in p["text"])
    assert len(slack.messages_in_thread("C1", ts)) == 4
    assert ts < slack.messages[-1]["ts"]


async def test_dm_is_answered_in_the_dm(slack: SlackEmulator, handler: AsyncSocketModeHandler) -> None:
    envelope_id, _ = await slack.dm("hello")

    await slack.wait_for_ack(envelope_id)
    posted = await slack.wait_for("chat.postMessage", lambda p: p["channel"] == "D1")
    assert posted["text"] == "dm answer to: hello"


async def test_slash_command_acks_with_payload_posts_and_responds(
    slack: SlackEmulator, handler: AsyncSocketModeHandler
) -> None:
    envelope_id = await slack.slash_command("/askdocs", "what is askdocs?")

    ack = await slack.wait_for_ack(envelope_id)
    assert ack.payload == {"text": "Searching…"}
    await slack.wait_for("chat.postMessage", lambda p: p["text"] == "Q: what is askdocs?")
    await slack.wait_for("response_url")
    assert slack.response_url_posts[0]["body"]["text"] == "only you see this"
    # Bolt sends the ack when its 10 ms poll sees ack() was called: it may land after respond(). Compare sets.
    assert {(e["via"], e["text"]) for e in slack.ephemerals} == {("ack", "Searching…"),
                                                                ("response_url", "only you see this")}


async def test_button_click_reaches_the_action_handler(
    slack: SlackEmulator, handler: AsyncSocketModeHandler
) -> None:
    command = await slack.slash_command("/askdocs", "q")
    await slack.wait_for_ack(command)
    await slack.wait_for("chat.postMessage")

    envelope_id = await slack.click("helpful", "yes")

    await slack.wait_for_ack(envelope_id)
    update = await slack.wait_for("chat.update")
    assert update["text"] == "thanks (yes)"
    assert slack.bot_messages("C1")[-1]["text"] == "thanks (yes)"
    assert slack.sent[envelope_id]["payload"]["actions"][0]["block_id"] == "feedback"


async def test_app_home_opened_publishes_a_view(
    slack: SlackEmulator, handler: AsyncSocketModeHandler
) -> None:
    await slack.open_home("U1")

    await slack.wait_for("views.publish")
    assert slack.published_views[-1]["user_id"] == "U1"
    assert slack.published_views[-1]["view"]["type"] == "home"


async def test_rate_limited_post_is_retried_after_retry_after(
    slack: SlackEmulator, handler: AsyncSocketModeHandler
) -> None:
    slack.rate_limit_next("chat.postMessage", retry_after=1)

    _, ts = await slack.mention("busy?")

    await slack.wait_for("chat.postMessage", lambda p: p.get("thread_ts") == ts)
    limited, posted = slack.calls_of("chat.postMessage")
    assert (limited.status, limited.error) == (429, "ratelimited")
    assert posted.ok and posted.time - limited.time >= 1


async def test_web_api_rejects_like_slack(slack: SlackEmulator, client: AsyncWebClient) -> None:
    """Each case is an error Slack answers and the product must survive; fail_next injects any other."""
    wrong = AsyncWebClient(token="xoxb-wrong", base_url=slack.base_url)
    cases: list[tuple[Any, str]] = [
        (wrong.auth_test(), "invalid_auth"),
        (client.apps_connections_open(app_token="xapp-wrong"), "invalid_auth"),
        (client.apps_connections_open(app_token=slack.bot_token), "not_allowed_token_type"),
        (client.chat_postMessage(channel="C1", text="x", blocks=[{"type": "divider"}] * 51),
         "invalid_blocks"),
        (client.chat_postMessage(channel="C1", text="x", blocks=[
            {"type": "section", "text": {"type": "mrkdwn", "text": "y" * 3001}}]), "invalid_blocks"),
        (client.chat_postMessage(channel="C1", text="x" * 40_001), "msg_too_long"),
        (client.chat_postMessage(channel="C404", text="x"), "channel_not_found"),
        (client.chat_update(channel="C1", ts="1600000000.000100", text="x"), "message_not_found"),
    ]
    for call, error in cases:
        with pytest.raises(SlackApiError) as raised:
            await call
        assert raised.value.response["error"] == error

    slack.add_channel("C2", name="random", bot_member=False)
    with pytest.raises(SlackApiError, match="not_in_channel"):
        await client.chat_postMessage(channel="#random", text="x")
    await client.conversations_join(channel="C2")
    assert (await client.chat_postMessage(channel="C2", text="x"))["ok"]

    slack.fail_next("auth.test", "fatal_error")
    with pytest.raises(SlackApiError, match="fatal_error"):
        await client.auth_test()
    assert (await client.auth_test())["user_id"] == "UBOT"


async def test_form_encoded_calls_and_limits_are_honoured(slack: SlackEmulator) -> None:
    """Form-encoded bodies (blocks as a JSON string) and GET query strings get the same answers as JSON."""
    form = {"token": slack.bot_token, "channel": "C1", "text": "hi", "blocks": json.dumps(FEEDBACK_BLOCKS)}
    async with aiohttp.ClientSession() as http:
        async with http.post(slack.base_url + "chat.postMessage", data=form) as resp:
            posted = await resp.json()
        bearer = {"Authorization": f"Bearer {slack.bot_token}"}
        async with http.get(slack.base_url + "conversations.history", params={"channel": "C1"},
                            headers=bearer) as resp:
            history = await resp.json()
    assert posted["ok"] and posted["message"]["blocks"][1]["block_id"] == "feedback"
    assert [m["ts"] for m in history["messages"]] == [posted["ts"]]
    assert slack.calls_of("chat.postMessage")[0].params["blocks"][0]["type"] == "section"


async def test_reconnect_opens_a_second_connection_that_still_gets_events(
    slack: SlackEmulator, handler: AsyncSocketModeHandler
) -> None:
    await slack.wait_for_connections(1)

    await slack.request_reconnect()
    await slack.wait_for_connections(2)
    first, _ = await slack.mention("still there?")
    await slack.request_reconnect(send_disconnect=False, drop=True)
    await slack.wait_for_connections(3, timeout=15)
    second, _ = await slack.mention("and now?")

    await slack.wait_for_ack(first)
    await slack.wait_for_ack(second)
    await slack.wait_for("chat.postMessage", lambda p: p["text"].endswith("and now?"))
    assert len(slack.calls_of("apps.connections.open")) == 3


async def test_redelivery_carries_retry_headers_to_bolt(
    slack: SlackEmulator, handler: AsyncSocketModeHandler, seen_retries: list[str]
) -> None:
    envelope_id, _ = await slack.mention("once")
    await slack.wait_for_ack(envelope_id)

    retry = await slack.redeliver(envelope_id)

    await slack.wait_for_ack(retry)
    # Slack sends retry_attempt 0 on a first delivery, so Bolt sees x-slack-retry-num "0" there: a retry
    # filter must test for a number above 0, not for the header's presence.
    assert seen_retries == ["0", "1"]
    assert slack.sent[retry]["payload"]["event_id"] == slack.sent[envelope_id]["payload"]["event_id"]
    assert slack.sent[retry]["retry_reason"] == "timeout"
