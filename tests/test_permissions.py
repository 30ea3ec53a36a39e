"""Who sees what (issue 15), end to end: the real SlackBot (Bolt over Socket Mode) against the Slack emulator, the
real service graph in CONFLUENCE_PERMISSIONS=per-user mode against the Confluence emulator's users, groups,
space permissions and page restrictions, and the embedded Postgres.

Wiki: ENG (readable by everyone) has a public page, a page restricted to the hr-team group, a page under a
parent restricted to Bob, and pages tests restrict or break; FIN is readable by the finance group only; HR is
everyone's, and channel CHR is locked to it (`CHR:HR!`). Alice (U1) is in hr-team, Bob (U2) in finance, Dave
(U3) has no Confluence account. Each test puts back what it changes.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.cli.commands import ask_once
from bot.cli.output import summary_lines
from bot.http.api import build_api
from bot.operations.sync_runner import RunOutcome
from bot.services import Services, build_services
from bot.settings import load_settings
from bot.slack.access import EXTERNAL_REFUSAL, GUEST_REFUSAL
from bot.slack.app import SlackBot
from db.embedded import EmbeddedPostgres
from tests.conftest import EMULATOR_EMBEDDING_MODEL, FAST_RETRY, clone_template
from tests.emulators.confluence import ConfluenceEmulator
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import SlackEmulator
from tests.test_concurrency import final_message

Json = dict[str, Any]
SAMPLES = Path(__file__).parent / "samples"
SALARY = "<p>Salary bands for engineers run from band L1 to band L5. Compensation reviews happen every March.</p>"
POSTMORTEM = "<p>The quartz outage postmortem found an expired certificate on the load balancer.</p>"
FREEZE = "<p>The deploy freeze starts on December 20 and ends on January 3; hotfixes need a director.</p>"
PARKING = "<p>Parking garage access cards are issued by reception on the ground floor.</p>"
BUDGET = "<p>The budget process closes each quarter: submit forecasts in the planning sheet.</p>"
_numbers = itertools.count(1)


@dataclass
class Stack:
    services: Services
    slack: SlackEmulator
    confluence: ConfluenceEmulator
    openai: OpenAIEmulator
    first_sync: RunOutcome


@pytest.fixture(scope="module")
async def stack(pg_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    dsn = await clone_template(pg_server, f"permissions_{next(_numbers)}")
    async with (
        ConfluenceEmulator(email="bot@example.com", api_token="confluence-secret-token") as confluence,
        OpenAIEmulator(api_key="sk-test-secret-key", embedding_dimension=384) as openai,
        SlackEmulator() as slack,
    ):
        confluence.add_user("acc-alice", "Alice Example", email="alice@example.com")
        confluence.add_user("acc-bob", "Bob Example", email="bob@example.com")
        confluence.add_group("hr-team")
        confluence.add_member("hr-team", "acc-alice")
        confluence.add_group("finance")
        confluence.add_member("finance", "acc-bob")
        confluence.add_space("ENG", "Engineering")
        confluence.add_page("ENG", "VPN setup", (SAMPLES / "howto_vpn_setup.xml").read_text())
        salary = confluence.add_page("ENG", "Salary bands", SALARY)
        confluence.restrict_page(salary, groups=["hr-team"])
        security = confluence.add_page("ENG", "Security", "<p>Security team notes.</p>")
        confluence.restrict_page(security, users=["acc-bob"])
        confluence.add_page("ENG", "Quartz outage postmortem", POSTMORTEM, parent_title="Security")
        confluence.add_page("ENG", "Deploy freeze", FREEZE)
        confluence.add_page("ENG", "Parking garage", PARKING)
        confluence.add_space("FIN", "Finance")
        confluence.set_space_readers("FIN", groups=["finance"])
        confluence.add_page("FIN", "Budget process", BUDGET)
        confluence.add_space("HR", "People")
        confluence.add_page("HR", "Leave policy", (SAMPLES / "hr_leave_policy.xml").read_text())
        slack.add_user("U2", name="bob")
        slack.add_user("U3", name="dave")
        slack.add_user("UADMIN", name="admin")
        slack.add_user("UGUEST", name="gus", guest="multi")
        slack.add_user("UGUEST1", name="gina", guest="single")
        slack.add_user("UEXT", name="erin", team_id="T2PARTNER")
        slack.add_channel("COPS", name="ops")
        slack.add_channel("CHR", name="people")
        settings = load_settings(
            None, database_url=dsn, askdocs_data_dir=tmp_path_factory.mktemp("permissions-data"),
            confluence_base_url=confluence.base_url, confluence_email="bot@example.com",
            confluence_api_token="confluence-secret-token", confluence_spaces=["ENG", "FIN", "HR"],
            confluence_permissions="per-user",
            openai_api_key="sk-test-secret-key", openai_base_url=openai.base_url, embedding_provider="openai",
            embedding_model=EMULATOR_EMBEDDING_MODEL, llm_provider="openai",
            slack_bot_token=slack.bot_token, slack_app_token=slack.app_token, slack_api_url=slack.base_url,
            slack_admin_users=["UADMIN", "UGUEST"], slack_ops_channel="COPS", slack_channel_spaces=["CHR:HR!"],
        )
        async with build_services(settings, confluence_retry=FAST_RETRY) as services:
            outcome = await services.sync.run(trigger="cli")
            assert isinstance(outcome, RunOutcome) and outcome.status == "succeeded", summary_lines(outcome)
            bot = SlackBot(services)
            await bot.start()
            try:
                yield Stack(services, slack, confluence, openai, outcome)
            finally:
                await bot.stop()


# ---- helpers --------------------------------------------------------------------------------------------


def cited(params: Json) -> str:
    """The answer's sources line(s)."""
    return " ".join(e["text"] for b in params.get("blocks") or [] if b["type"] == "context" for e in b["elements"])


async def answer_in(stack: Stack, channel: str, thread_ts: str) -> Json:
    """The bot's finished answer in this thread, as the user sees it (streamed or posted)."""
    return await final_message(stack.slack, channel, thread_ts)


def bot_replies(slack: SlackEmulator, channel: str, thread_ts: str) -> list[Json]:
    return [m for m in slack.messages_in_thread(channel, thread_ts) if m.get("bot_id") == slack.bot_id]


async def ask_dm(stack: Stack, question: str, *, user: str) -> tuple[Json, str]:
    """(the final answer, every prompt the model saw for it)."""
    prompts = len(stack.openai.chat_requests)
    _, ts = await stack.slack.dm(question, user=user)
    channel = next(c.id for c in stack.slack.channels.values() if c.is_im and c.user == user)
    final = await answer_in(stack, channel, ts)
    return final, str(stack.openai.chat_requests[prompts:])


async def ask_channel(stack: Stack, question: str, *, user: str = "U1", channel: str = "C1") -> tuple[Json, str]:
    prompts = len(stack.openai.chat_requests)
    _, ts = await stack.slack.mention(question, user=user, channel=channel)
    final = await answer_in(stack, channel, ts)
    return final, str(stack.openai.chat_requests[prompts:])


async def refresh(stack: Stack) -> RunOutcome:
    outcome = await stack.services.sync.refresh_permissions()
    assert isinstance(outcome, RunOutcome)
    return outcome


# ---- guests and Slack Connect ----------------------------------------------------------------------------


async def refused_in_thread(stack: Stack, channel: str, thread_ts: str, since: int, text: str) -> None:
    posted = await stack.slack.wait_for(
        "chat.postMessage", lambda p: p.get("channel") == channel and p.get("thread_ts") == thread_ts, since=since)
    assert posted["text"] == text and "http" not in posted["text"]


async def test_guest_is_refused_politely_on_every_surface(stack: Stack) -> None:
    slack = stack.slack
    _, asked = await slack.mention("how do I connect to the VPN?")  # Alice: an answer to follow up and click
    answered = await answer_in(stack, "C1", asked)
    refused: list[tuple[str, str]] = []
    for guest in ("UGUEST", "UGUEST1"):
        since = len(slack.calls)
        _, ts = await slack.mention("how do I connect to the VPN?", user=guest)
        await refused_in_thread(stack, "C1", ts, since, GUEST_REFUSAL)
        refused.append(("C1", ts))

        since = len(slack.calls)
        _, ts = await slack.dm("how do I connect to the VPN?", user=guest)
        im = next(c.id for c in slack.channels.values() if c.is_im and c.user == guest)
        await refused_in_thread(stack, im, ts, since, GUEST_REFUSAL)
        refused.append((im, ts))

        since = len(slack.calls)
        msg = slack._store_user_message("C1", guest, "and from home?", asked)
        await slack.send_event({**slack._user_event("message", msg), "channel_type": "channel"})
        await refused_in_thread(stack, "C1", asked, since, GUEST_REFUSAL)

        for command in ("/askdocs", "/docsync"):
            ack = await slack.wait_for_ack(await slack.slash_command(command, "vpn", user_id=guest))
            assert ack.payload is not None and ack.payload["text"] == GUEST_REFUSAL

        shown = len(slack.ephemerals)
        await slack.click("feedback_up", str(answered.get("ts")), user_id=guest, message_ts=answered["ts"])
        ephemeral = await slack.wait_for("chat.postEphemeral", lambda p, g=guest: p.get("user") == g, since=since)
        assert ephemeral["text"] == GUEST_REFUSAL and len(slack.ephemerals) > shown
    # Nothing but the refusal in a guest's thread, and no second answer where a guest followed up.
    for channel, ts in refused:
        assert [m["text"] for m in bot_replies(slack, channel, ts)] == [GUEST_REFUSAL]
    assert [m["text"] for m in bot_replies(slack, "C1", asked)][1:] == [GUEST_REFUSAL, GUEST_REFUSAL]
    assert len(slack.calls_of("users.info")) <= 8  # cached: once per user, not once per event


async def test_slack_connect_user_is_refused(stack: Stack) -> None:
    slack = stack.slack
    since = len(slack.calls)
    _, ts = await slack.mention("how do I connect to the VPN?", user="UEXT")
    await refused_in_thread(stack, "C1", ts, since, EXTERNAL_REFUSAL)
    ack = await slack.wait_for_ack(await slack.slash_command("/askdocs", "vpn", user_id="UEXT"))
    assert ack.payload is not None and ack.payload["text"] == EXTERNAL_REFUSAL


# ---- per-user permissions ---------------------------------------------------------------------------------


async def test_restricted_page_is_cited_to_its_group_in_a_dm_only(stack: Stack) -> None:
    question = "what are the salary bands for engineers?"
    alice, _ = await ask_dm(stack, question, user="U1")  # in hr-team
    assert "Salary bands" in cited(alice)
    bob, seen_by_bob = await ask_dm(stack, question, user="U2")
    assert "Salary bands" not in cited(bob) and "band L5" not in seen_by_bob
    channel, seen_in_channel = await ask_channel(stack, question, user="U1")
    assert "Salary bands" not in cited(channel) and "band L5" not in seen_in_channel


async def test_ancestor_restriction_and_space_permission_decide_too(stack: Stack) -> None:
    outage = "what did the quartz outage postmortem find?"
    bob, _ = await ask_dm(stack, outage, user="U2")
    assert "Quartz outage postmortem" in cited(bob)  # Bob may read its restricted parent
    alice, seen = await ask_dm(stack, outage, user="U1")
    assert "Quartz outage postmortem" not in cited(alice) and "expired certificate" not in seen
    budget = "how does the budget process work and where do forecasts go?"
    assert "Budget process" in cited((await ask_dm(stack, budget, user="U2"))[0])  # finance may read FIN
    assert "Budget process" not in cited((await ask_dm(stack, budget, user="U1"))[0])


async def test_asker_without_a_confluence_account_sees_organisation_wide_pages_and_no_email_is_logged(
    stack: Stack, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO):
        dave, seen = await ask_dm(stack, "what are the salary bands for engineers?", user="U3")
        vpn, _ = await ask_dm(stack, "how do I connect my laptop to the corporate VPN?", user="U3")
    assert "Salary bands" not in cited(dave) and "band L5" not in seen
    assert "VPN setup" in cited(vpn)
    assert "@example.com" not in caplog.text


async def test_restriction_added_without_an_edit_is_honoured_after_the_next_refresh(stack: Stack) -> None:
    confluence = stack.confluence
    question = "when does the deploy freeze start and end?"
    assert "Deploy freeze" in cited((await ask_channel(stack, question))[0])
    page_id = confluence.find("Deploy freeze")
    version = confluence.pages[page_id].version
    confluence.restrict_page(page_id, users=["acc-bob"])
    assert confluence.pages[page_id].version == version  # no edit: a version diff can't see it
    confluence.reset_records()
    try:
        outcome = await refresh(stack)
        requests = len(confluence.requests)
        assert confluence.bodies_served == 0 and outcome.report.bodies_fetched == 0
        # Measured: 17 for 3 spaces of 8 pages: the group list, 4 per space (space, its permissions, one CQL
        # page each of pages and blog posts), the members of 3 groups and one email batch.
        assert requests == 17
        channel, seen = await ask_channel(stack, question)
        assert "Deploy freeze" not in cited(channel) and "December 20" not in seen
        alice, _ = await ask_dm(stack, question, user="U1")
        assert "Deploy freeze" not in cited(alice)
        assert "Deploy freeze" in cited((await ask_dm(stack, question, user="U2"))[0])
    finally:
        confluence.unrestrict_page(page_id)
        await refresh(stack)
    assert "Deploy freeze" in cited((await ask_channel(stack, question))[0])


async def test_page_whose_permissions_cannot_be_read_is_used_for_nobody_and_reported(stack: Stack) -> None:
    confluence, slack = stack.confluence, stack.slack
    question = "who issues parking garage access cards?"
    page_id = confluence.find("Parking garage")
    confluence.hidden_from_search.add(page_id)  # the search index is behind: its restrictions come one by one
    confluence.fail_next(50, status=500, path_contains=f"/content/{page_id}/restriction")
    since = len(slack.calls)
    try:
        outcome = await refresh(stack)
        assert outcome.permissions is not None and page_id in outcome.permissions.unreadable
        assert "restrictions could not be read" in outcome.permissions.unreadable[page_id]
        assert outcome.status == "partial"
        assert any(page_id in line and "used by nobody" in line for line in summary_lines(outcome))
        alert = await slack.wait_for("chat.postMessage", lambda p: p.get("channel") == "COPS", since=since)
        assert page_id in str(alert["blocks"]) and "could not be read" in str(alert["blocks"])
        for asked in (ask_dm(stack, question, user="U1"), ask_channel(stack, question)):
            final, seen = await asked
            assert "Parking garage" not in cited(final) and "reception" not in seen
    finally:
        confluence.clear_faults()
        confluence.hidden_from_search.discard(page_id)
    assert (await refresh(stack)).status == "succeeded"
    assert "Parking garage" in cited((await ask_channel(stack, question))[0])


async def test_locked_channel_scope_cannot_be_widened_with_in(stack: Stack) -> None:
    final, _ = await ask_channel(stack, "in:ENG how do I connect my laptop to the corporate VPN?", channel="CHR")
    assert "VPN setup" not in cited(final)
    open_channel, _ = await ask_channel(stack, "in:ENG how do I connect my laptop to the corporate VPN?")
    assert "VPN setup" in cited(open_channel)


async def test_api_answers_as_user_or_organisation_wide(stack: Stack) -> None:
    client = TestClient(TestServer(build_api(stack.services)))
    await client.start_server()
    try:
        question = {"question": "what are the salary bands for engineers?"}
        as_alice = await (await client.post("/api/query", json={**question, "as_user": "Alice@Example.com"})).json()
        assert "Salary bands" in [s["title"] for s in as_alice["sources"]]
        anyone = await (await client.post("/api/query", json=question)).json()
        assert "Salary bands" not in [s["title"] for s in anyone["sources"] + anyone["closest"]]
        as_bob = await (await client.post("/api/query", json={**question, "as_user": "bob@example.com"})).json()
        assert "Salary bands" not in [s["title"] for s in as_bob["sources"] + as_bob["closest"]]
    finally:
        await client.close()


async def test_first_sync_indexed_restricted_pages_and_read_their_access(stack: Stack) -> None:
    report = stack.first_sync.permissions
    assert report is not None and not report.unreadable
    assert report.pages_checked == 8 and report.restricted_pages == 3  # salary, security, its child
    assert report.org_wide_pages == 4  # VPN, deploy freeze, parking, leave policy (FIN isn't everyone's)
    assert stack.first_sync.report.pages_skipped == 0


async def test_cli_ask_answers_as_user_or_organisation_wide(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    question = "what are the salary bands for engineers?"
    await ask_once(stack.services.settings, question, [], as_json=True, as_user="alice@example.com")
    as_alice = json.loads(capsys.readouterr().out)
    assert "Salary bands" in [s["title"] for s in as_alice["sources"]]
    await ask_once(stack.services.settings, question, [], as_json=True)
    anyone = json.loads(capsys.readouterr().out)
    assert "Salary bands" not in [s["title"] for s in anyone["sources"] + anyone["closest"]]


async def test_space_whose_permissions_cannot_be_read_is_used_for_nobody(stack: Stack) -> None:
    confluence = stack.confluence
    space_id = confluence.spaces["HR"].space_id
    confluence.fail_next(50, status=503, path_contains=f"/spaces/{space_id}/permissions")
    question = "how many days of annual leave do I get?"
    try:
        outcome = await refresh(stack)
        assert outcome.status == "partial" and "HR" in outcome.failed_spaces
        assert outcome.permissions is not None and confluence.find("Leave policy") in outcome.permissions.unreadable
        assert "Leave policy" not in cited((await ask_dm(stack, question, user="U1"))[0])
    finally:
        confluence.clear_faults()
    await refresh(stack)
    assert "Leave policy" in cited((await ask_dm(stack, question, user="U1"))[0])


async def test_docsync_re_reads_permissions(stack: Stack) -> None:
    confluence, slack = stack.confluence, stack.slack
    question = "who issues parking garage access cards?"
    page_id = confluence.find("Parking garage")
    confluence.restrict_page(page_id, groups=["finance"])
    try:
        since = len(slack.calls)
        await slack.wait_for_ack(await slack.slash_command("/docsync", "", user_id="UADMIN"))
        await slack.wait_for("chat.update", lambda p: "Sync #" in str(p.get("text")) and "succeeded" in str(
            p.get("text")), since=since, timeout=20)
        assert "Parking garage" not in cited((await ask_channel(stack, question))[0])
        assert "Parking garage" in cited((await ask_dm(stack, question, user="U2"))[0])  # Bob is in finance
    finally:
        confluence.unrestrict_page(page_id)
        await refresh(stack)
