"""Pure Slack formatting: Markdown → mrkdwn, escaping that never pings, Block Kit limits, the `in:` prefix."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.answering.models import Answer, Source, Turn
from bot.operations.status import KnowledgeBaseStatus, SpaceStatus
from bot.operations.sync_runner import RunOutcome
from bot.slack import blocks, ops_blocks
from bot.slack.alerts import needs_alert
from bot.slack.mrkdwn import (
    ZWJ,
    escape,
    from_markdown,
    link,
    parse_scope,
    slack_to_plain,
    split_text,
    truncate,
)
from ingest.models import PageFailure, SyncReport
from tests.emulators.slack import block_errors

OUR_LINK = re.compile(r"<(?:https?|mailto):[^<>|\s]+\|[^<>|]*>")


def pings(text: str) -> list[str]:
    """Anything in `text` Slack would turn into a notification or a token we didn't build with link()."""
    found = re.findall(r"<[!@#][^>]*>", text)
    found += [m.group(0) for m in re.finditer(r"(?<![\w.])@(channel|here|everyone)\b", text, re.IGNORECASE)]
    stray = re.sub(r"(?m)^>", "", OUR_LINK.sub("", text))  # a quote marker is fine
    return found + (["stray <"] if "<" in stray else []) + (["stray >"] if ">" in stray else [])


def source(n: int, title: str = "VPN setup", url: str = "https://wiki.example.com/x/1") -> Source:
    return Source(n=n, title=title, url=url, space_key="ENG", page_id=str(n), score=0.9)


def make_answer(text: str, **overrides: object) -> Answer:
    values: dict[str, object] = {
        "question": "q", "standalone_question": "q", "text": text, "sources": [source(1)], "refused": False,
        "latency_ms": 5, "query_id": 42,
    }
    values.update(overrides)
    return Answer(**values)  # type: ignore[arg-type]


# ---- Markdown → mrkdwn ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("markdown", "mrkdwn"), [
    ("Use **kubectl** now [1].", "Use *kubectl* now [1]."),
    ("__bold__ and *italic* and ~~gone~~", "*bold* and _italic_ and ~gone~"),
    ("2 * 3 * 4", "2 * 3 * 4"),
    ("See [the runbook](https://wiki/x?a=1&b=2) [2].", "See <https://wiki/x?a=1&amp;b=2|the runbook> [2]."),
    ("![diagram](https://img/x.png)", "<https://img/x.png|diagram>"),
    ("Go to <https://example.com/a>", "Go to <https://example.com/a|https://example.com/a>"),
    ("[click](javascript:alert(1))", "click)"),
    ("# Deploys\n## Steps **now**", "*Deploys*\n*Steps now*"),
    ("- one\n* two\n  - nested\n+ three", "• one\n• two\n    • nested\n• three"),
    ("1. first\n2. second", "1. first\n2. second"),
    ("> quoted <b>", ">quoted &lt;b&gt;"),
    ("---", "───"),
    ("a & b < c > d", "a &amp; b &lt; c &gt; d"),
    ("run `kubectl get <pod>` now", "run `kubectl get &lt;pod&gt;` now"),
    ("```bash\necho \"<!here>\" && ls **x**\n```", "```echo \"&lt;!here&gt;\" &amp;&amp; ls **x**\n```"),
    ("Steps:\n```\nmake deploy", "Steps:\n```make deploy"),  # a fence still streaming
    ("cite [1][2] and [3]", "cite [1][2] and [3]"),
])
def test_markdown_becomes_slack_mrkdwn(markdown: str, mrkdwn: str) -> None:
    assert from_markdown(markdown) == mrkdwn


@pytest.mark.parametrize(("text", "shown"), [
    ("<!channel> hi", "&lt;!channel&gt; hi"),
    ("<!here>", "&lt;!here&gt;"),
    ("<!everyone>", "&lt;!everyone&gt;"),
    ("<!subteam^S123|@oncall>", "&lt;!subteam^S123|@oncall&gt;"),
    ("<@U123ABC> look", "&lt;@U123ABC&gt; look"),
    ("@channel @Here @everyone", f"@{ZWJ}channel @{ZWJ}Here @{ZWJ}everyone"),
    ("mail me@here.com", "mail me@here.com"),
    ("Tom & Jerry", "Tom &amp; Jerry"),
])
def test_untrusted_text_is_escaped_and_cannot_ping(text: str, shown: str) -> None:
    assert escape(text) == shown
    assert not pings(escape(text))
    assert not pings(from_markdown(text))


@pytest.mark.parametrize(("url", "title", "expected"), [
    ("https://wiki/x/1", "VPN setup", "<https://wiki/x/1|VPN setup>"),
    ("https://wiki/x?a=1&b=2", "A & B", "<https://wiki/x?a=1&amp;b=2|A &amp; B>"),
    ("https://wiki/x|y>z", "Pipe | and > in title", "<https://wiki/x%7Cy%3Ez|Pipe ∣ and &gt; in title>"),
    ("https://wiki/a b", "two\nlines", "<https://wiki/a%20b|two lines>"),
    ("https://wiki/x", "<!here> @channel", f"<https://wiki/x|&lt;!here&gt; @{ZWJ}channel>"),
    ("javascript:alert(1)", "evil", "evil"),
    ("https://wiki/x", "", "<https://wiki/x|https://wiki/x>"),
])
def test_links_stay_valid_whatever_the_title(url: str, title: str, expected: str) -> None:
    assert link(url, title) == expected
    assert OUR_LINK.fullmatch(expected) or "<" not in expected


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>!@&|*_~`#-[]() \nchanelhryvoU1:/.ps^")), max_size=120))
def test_no_model_text_can_produce_a_ping_or_a_broken_token(markdown: str) -> None:
    for piece in (from_markdown(markdown), escape(markdown)):
        assert not pings(piece), (markdown, piece)


# ---- limits ---------------------------------------------------------------------------------------------


def test_long_text_splits_into_sections_within_the_limit_without_breaking_links() -> None:
    text = " ".join(f"word{i} {link('https://wiki/x', 'a long title with spaces')}" for i in range(400))
    pieces = split_text(text, 3000)
    assert len(pieces) > 1 and all(len(p) <= 3000 for p in pieces)
    for piece in pieces:
        assert OUR_LINK.sub("", piece).count("<") == 0
    assert "".join(pieces).replace(" ", "") == text.replace(" ", "")


def test_split_closes_and_reopens_a_code_fence() -> None:
    text = "Intro\n```\n" + "\n".join(f"line {i}" for i in range(800)) + "\n```\nDone."
    pieces = split_text(text, 3000)
    assert len(pieces) > 1 and all(len(p) <= 3000 and p.count("```") % 2 == 0 for p in pieces)


def test_split_never_cuts_an_entity() -> None:
    text = "&amp;" * 1000
    assert all(re.fullmatch(r"(&amp;)+", p) for p in split_text(text, 100))
    assert truncate("&amp;" * 10, 23).startswith("&amp;&amp;&amp;")


def test_huge_answer_respects_every_slack_limit() -> None:
    text = "\n\n".join(f"## Part {i}\n" + ("Deploys need **approval** [1]. " * 40) for i in range(60))
    many_sources = [source(n, title="T" * 300) for n in range(1, 15)]
    message = blocks.answer(make_answer(text, sources=many_sources, note="model unavailable", truncated=True))
    assert block_errors(message["blocks"]) == []
    assert len(message["blocks"]) <= 50 and len(message["text"]) <= 40_000
    assert sum(len(json.dumps(b)) for b in message["blocks"]) < 13_000
    assert message["blocks"][-1]["block_id"].startswith("askdocs_feedback")
    sources = [b for b in message["blocks"] if b["type"] == "context" and "[1]" in json.dumps(b)]
    assert len(sources[0]["elements"]) == 10


def test_fit_keeps_the_last_blocks_when_there_are_too_many() -> None:
    many = [blocks.section(str(i)) for i in range(80)]
    fitted = blocks.fit(many, keep_last=2)
    assert len(fitted) == 50 and fitted[-2:] == many[-2:]


# ---- answers --------------------------------------------------------------------------------------------


def test_answer_has_text_numbered_sources_and_feedback_buttons() -> None:
    message = blocks.answer(make_answer("Use **WireGuard** [1].", sources=[
        source(1), source(2, title="Okta | MFA > setup", url="https://wiki/x/2")]))
    assert message["blocks"][0]["text"]["text"] == "Use *WireGuard* [1]."
    [context] = [b for b in message["blocks"] if b["type"] == "context"]
    assert [e["text"] for e in context["elements"]] == [
        "[1] <https://wiki.example.com/x/1|VPN setup>", "[2] <https://wiki/x/2|Okta ∣ MFA &gt; setup>"]
    [buttons] = message["blocks"][-1]["elements"]
    assert message["blocks"][-1]["type"] == "context_actions" and buttons["type"] == "feedback_buttons"
    assert (buttons["positive_button"]["value"], buttons["negative_button"]["value"]) == ("up:42", "down:42")
    assert blocks.feedback_vote({"action_id": "feedback", "value": "down:42"}) == (42, -1)
    assert blocks.feedback_vote({"action_id": "feedback_up", "value": "42"}) == (42, 1)  # older answers
    assert message["text"] == "Use *WireGuard* [1]."


def test_every_message_gets_fresh_block_ids_that_history_still_recognises() -> None:
    result = make_answer("Use **WireGuard** [1].", sources=[source(1)])
    first, second = blocks.answer(result, nonce="a1"), blocks.answer(result, nonce="b2")
    ids = [b.get("block_id") for b in first["blocks"] if b.get("block_id")]
    assert ids and not set(ids) & {b.get("block_id") for b in second["blocks"]}
    tail = blocks.answer_tail(result, nonce="c3")
    streamed = {"ts": "1.000002", "user": "UBOT", "bot_id": "BBOT", "text": "Use **WireGuard** [1].",
                "blocks": tail}
    turns, conversation = blocks.thread_turns(
        [{"ts": "1.000001", "user": "U1", "text": "vpn?"}, streamed], before_ts="9.0", bot_user_id="UBOT",
        bot_id="BBOT")
    assert conversation and turns[-1] == Turn("assistant", "Use **WireGuard** [1].")
    assert block_errors(tail) == []


@pytest.mark.parametrize(("partial", "shown"), [
    ("", ""), ("Install", ""), ("Install Wire", "Install "), ("Ping @he", "Ping "), ("a\nb", "a\n"),
])
def test_only_whole_words_are_streamed(partial: str, shown: str) -> None:
    assert blocks.streamable(partial) == shown


def test_a_stream_is_completed_only_when_the_final_text_continues_it() -> None:
    result = make_answer("Install WireGuard [1]. Then sign in @here.", sources=[source(1)])
    streamed = blocks.stream_markdown(blocks.streamable("Install WireGuard [1]. Th"))
    assert blocks.stream_continuation(result, streamed) == f"Then sign in @{ZWJ}here."
    renumbered = blocks.stream_markdown("Install WireGuard [3]. ")
    assert blocks.stream_continuation(result, renumbered) is None
    assert blocks.stream_continuation(make_answer("x [1]", refused=True), "") is None
    # Citations are streamed numbered by first citation, as the final answer numbers its sources.
    assert blocks.stream_piece("Use A [3]. Then B [1], again A [3]. Mo") == "Use A [1]. Then B [2], again A [1]."
    assert blocks.stream_piece("Use `arr[3]` then B [2]. x") == "Use `arr[3]` then B [1]."


def test_refusal_says_so_and_lists_the_closest_pages() -> None:
    message = blocks.answer(make_answer("I couldn't find that in Confluence.", refused=True, sources=[],
                                        closest=[source(1), source(2, title="Leave <policy>")]))
    text = message["blocks"][0]["text"]["text"]
    assert text.startswith("I couldn't find that in Confluence.")
    assert "<https://wiki.example.com/x/1|VPN setup>" in text and "Leave &lt;policy&gt;" in text


def test_notes_for_a_cut_question_and_an_unavailable_model_are_shown() -> None:
    result = make_answer("x [1]", truncated=True, note="The model is down <!here>", query_id=None)
    message = blocks.answer(result)
    notes = [b["elements"][0]["text"] for b in message["blocks"] if b["type"] == "context"][:2]
    assert "&lt;!here&gt;" in notes[0] and "only read its first part" in notes[1]
    assert not any(b["type"] == "actions" for b in message["blocks"])


def test_asked_message_mentions_the_asker_but_escapes_the_question() -> None:
    message = blocks.asked("U123", "why <!channel> & @here?")
    assert message["text"] == f"<@U123> asked: why &lt;!channel&gt; &amp; @{ZWJ}here?"
    assert blocks.asked("not a user <!here>", "q")["text"].startswith("not a user &lt;!here&gt;")


# ---- Slack text in, scopes ------------------------------------------------------------------------------


@pytest.mark.parametrize(("question", "spaces", "rest"), [
    ("in:ENG,OPS how do I deploy?", ["ENG", "OPS"], "how do I deploy?"),
    ("in:eng   where?", ["ENG"], "where?"),
    ("IN:ops,OPS,hr why", ["OPS", "HR"], "why"),
    ("in:~alice notes", ["~alice"], "notes"),
    ("in:ENG", ["ENG"], ""),
    ("inside the VPN?", None, "inside the VPN?"),
    ("what is in:ENG about?", None, "what is in:ENG about?"),
    ("in: ENG spaced", None, "in: ENG spaced"),
])
def test_in_prefix_names_spaces(question: str, spaces: list[str] | None, rest: str) -> None:
    assert parse_scope(question) == (spaces, rest)


@pytest.mark.parametrize(("text", "plain"), [
    ("<@UBOT> how do I  deploy?", "how do I deploy?"),
    ("<@UBOT|askdocs> a &amp; b &lt;x&gt;", "a & b <x>"),
    ("see <https://a.example/x|the page> and <https://b.example>", "see the page and https://b.example"),
    ("ask <#C1|general> or <@U2>", "ask #general or @U2"),
    ("<!here> anyone?", "@here anyone?"),
])
def test_slack_text_becomes_a_plain_question(text: str, plain: str) -> None:
    assert slack_to_plain(text, bot_user_id="UBOT") == plain


def test_thread_becomes_history_without_placeholders_or_other_bots() -> None:
    asked = blocks.asked("U1", "how do I connect to the VPN?")
    answer = blocks.answer(make_answer("Install **WireGuard** [1]."))
    messages = [
        {"ts": "100.000001", "user": "UBOT", "bot_id": "BBOT", **asked},
        {"ts": "100.000002", "user": "UBOT", "bot_id": "BBOT", **answer},
        {"ts": "100.000003", "user": "UBOT", "bot_id": "BBOT", **blocks.searching()},
        {"ts": "100.000004", "user": "UOTHERBOT", "bot_id": "BX", "text": "beep"},
        {"ts": "100.000005", "user": "U2", "text": "<@UBOT> in:ENG and on a Mac?"},
        {"ts": "100.000006", "user": "U1", "text": "the current message"},
    ]
    turns, has_bot = blocks.thread_turns(messages, before_ts="100.000006", bot_user_id="UBOT", bot_id="BBOT")
    assert has_bot
    assert turns == [
        Turn("user", "how do I connect to the VPN?"),
        Turn("assistant", "Install *WireGuard* [1]."),
        Turn("user", "and on a Mac?"),
    ]
    _, has_bot = blocks.thread_turns(messages[3:], before_ts="200.0", bot_user_id="UBOT", bot_id="BBOT")
    assert not has_bot
    sync_report = {"ts": "100.0", "user": "UBOT", "bot_id": "BBOT", **ops_blocks.sync_started("U1", ["ENG"], 3)}
    _, has_bot = blocks.thread_turns([sync_report], before_ts="200.0", bot_user_id="UBOT", bot_id="BBOT")
    assert not has_bot  # replies under a /docsync report are people talking among themselves


# ---- sync, alerts, home ---------------------------------------------------------------------------------


def outcome(
    status: str = "succeeded", failures: int = 0, failed_spaces: dict[str, str] | None = None,
) -> RunOutcome:
    report = SyncReport(spaces=["ENG"], pages_seen=20, pages_added=2, pages_failed=failures)
    report.failures = [PageFailure(str(i), f"Page <{i}>", "", "Confluence answered 500: server exploded "
                                   "while rendering the macro body of this page") for i in range(failures)]
    return RunOutcome(7, status, report, 3.25, "scheduler", None, failed_spaces=failed_spaces or {})


@pytest.mark.parametrize(("run", "alert"), [
    (outcome(), False),
    (outcome("partial", failures=1), True),
    (outcome("partial", failed_spaces={"OPS": "listing incomplete"}), True),
    (outcome("failed"), True),
])
def test_only_runs_with_failures_alert(run: RunOutcome, alert: bool) -> None:
    assert needs_alert(run) is alert


def test_ops_alert_lists_at_most_ten_failing_pages_with_links_and_short_errors() -> None:
    message = ops_blocks.ops_alert(outcome("partial", failures=14), lambda page_id: f"https://wiki/p?id={page_id}")
    assert block_errors(message["blocks"]) == []
    text = json.dumps(message["blocks"], ensure_ascii=False)
    assert text.count("https://wiki/p?id=") == 10 and "and 4 more" in text
    assert "<https://wiki/p?id=0|Page &lt;0&gt;>" in text
    assert "server exploded while rendering the…" in text and "macro body" not in text


def test_sync_summary_reports_counters_and_time() -> None:
    message = ops_blocks.sync_summary("UADMIN", outcome("partial", failures=1))
    assert message["text"].startswith(":warning: Sync #7 partial in 3.2s (started by <@UADMIN>) for ENG")
    assert "2 added" in message["text"] and "1 failed" in message["text"]
    assert block_errors(message["blocks"]) == []


def test_home_view_shows_status_and_how_to_ask() -> None:
    status = KnowledgeBaseStatus(
        spaces=[SpaceStatus("ENG", "Eng <team>", 12, 80, datetime(2025, 1, 2, 3, 4, tzinfo=UTC)),
                SpaceStatus("HR", "People", 1, 5, None)],
        embedding_model="m", embedding_dimension=384, configured_embedding_model="m", last_sync=None,
        running_sync=None, last_success=None, questions_answered=3,
        next_sync_at=datetime(2025, 1, 3, tzinfo=UTC),
    )
    view = ops_blocks.home_view(status)
    text = json.dumps(view)
    assert view["type"] == "home" and block_errors(view["blocks"], max_blocks=100) == []
    assert "13 pages, 85 chunks in 2 spaces" in text and "1 page, 5 chunks" in text
    assert "Eng &lt;team&gt;" in text and "2025-01-03 00:00 UTC" in text and "/askdocs" in text
