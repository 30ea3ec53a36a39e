"""Pure: the messages operators see in Slack — /docsync progress and summary, ops alerts, the App Home tab.

The same rules as bot/slack/blocks.py (escaped text, links only through `mrkdwn.link`, Block Kit's limits).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bot.slack.blocks import MAX_TITLE_CHARS, Block, Message, context, fit, section, sections
from bot.slack.mrkdwn import escape, link, user_mention

if TYPE_CHECKING:
    from bot.operations.status import KnowledgeBaseStatus
    from bot.operations.sync_runner import RunOutcome
    from db.models import SyncRun
    from ingest.sync import Progress

ALERT_FAILURES_SHOWN = 10


# ---- /docsync -----------------------------------------------------------------------------------------


def _space_list(spaces: Sequence[str]) -> str:
    return escape(", ".join(spaces)) if spaces else "the configured spaces"


def sync_started(user_id: str, spaces: Sequence[str], run_id: int) -> Message:
    text = (f":arrows_counterclockwise: Sync #{run_id} started by {user_mention(user_id)} "
            f"for {_space_list(spaces)}…")
    return {"text": text, "blocks": [section(text)]}


def sync_progress(user_id: str, spaces: Sequence[str], run_id: int, step: Progress) -> Message:
    head = sync_started(user_id, spaces, run_id)["text"]
    line = f"{escape(step.space_key)}: {step.done}/{step.total} pages processed"
    return {"text": f"{head}\n{line}", "blocks": [section(head), context(line)]}


def sync_summary(user_id: str, outcome: RunOutcome) -> Message:
    emoji = {"succeeded": ":white_check_mark:", "partial": ":warning:"}.get(outcome.status, ":x:")
    r = outcome.report
    head = (f"{emoji} Sync #{outcome.run_id} {escape(outcome.status)} in {outcome.duration_s:.1f}s "
            f"(started by {user_mention(user_id)}) for {_space_list(r.spaces)}")
    counts = (f"Pages: {r.pages_added} added, {r.pages_updated} updated, {r.pages_deleted} deleted, "
              f"{r.pages_failed} failed, {r.pages_unchanged} unchanged, {r.pages_skipped} skipped · "
              f"chunks: {r.chunks_embedded} embedded, {r.chunks_reused} reused")
    lines = [f"• space {escape(k)}: {escape(short_error(v, words=12))}"
             for k, v in outcome.failed_spaces.items()]
    lines += [f"• {escape(w)}" for w in r.warnings[:5]]
    lines += [f"• failed: {escape(f.title or f.page_id)} ({escape(short_error(f.error))})"
              for f in r.failures[:5]]
    if outcome.error:
        lines.append(f"• error: {escape(short_error(outcome.error, words=12))}")
    lines += _unreadable_lines(outcome, None)
    blocks = [section(head), context(counts)]
    if lines:
        blocks += sections("\n".join(lines))
    return {"text": f"{head}\n{counts}", "blocks": fit(blocks)}


def sync_already_running(run: SyncRun | None) -> str:
    if run is None:
        return "A sync is already running (in another askdocs process); try again when it has finished."
    who = user_mention(run.requested_by) if run.trigger == "slack" and run.requested_by else escape(
        run.requested_by or run.trigger)
    return (f"A sync is already running: #{run.id}, started {format_time(run.started_at)} by {who} for "
            f"{_space_list(run.spaces)}. Try again when it has finished.")


# ---- ops alerts ---------------------------------------------------------------------------------------


def short_error(error: str, *, words: int = 8, max_chars: int = 80) -> str:
    """The first few words of an error message, for one-line summaries."""
    parts = error.split()
    cut = " ".join(parts[:words])
    if len(cut) > max_chars:
        cut = cut[: max_chars - 1].rstrip()
    return cut + ("…" if cut != " ".join(parts) else "")


def ops_alert(outcome: RunOutcome, page_url: Callable[[str], str] | None = None) -> Message:
    """A finished run with failures, for the ops channel: counters and up to 10 failing pages."""
    r = outcome.report
    who = (user_mention(outcome.requested_by) if outcome.trigger == "slack" and outcome.requested_by
           else escape(outcome.requested_by or "-"))
    head = (f":rotating_light: Sync #{outcome.run_id} ({escape(outcome.trigger)} by {who}) "
            f"{escape(outcome.status)}: {r.pages_failed} page(s) failed, "
            f"{len(outcome.failed_spaces)} space(s) failed · spaces {_space_list(r.spaces)} · "
            f"{outcome.duration_s:.1f}s")
    counts = (f"{r.pages_seen} seen, {r.pages_added} added, {r.pages_updated} updated, {r.pages_deleted} "
              f"deleted, {r.pages_failed} failed, {r.pages_skipped} skipped")
    lines = [f"• space *{escape(k)}*: {escape(short_error(v))}" for k, v in outcome.failed_spaces.items()]
    if outcome.error:
        lines.append(f"• run error: {escape(short_error(outcome.error))}")
    for failure in r.failures[:ALERT_FAILURES_SHOWN]:
        url = failure.url or (page_url(failure.page_id) if page_url else "")
        title = (failure.title or failure.page_id)[:MAX_TITLE_CHARS]
        lines.append(f"• {link(url, title) if url else escape(title)} ({escape(failure.page_id)}): "
                     f"{escape(short_error(failure.error))}")
    if len(r.failures) > ALERT_FAILURES_SHOWN:
        lines.append(f"…and {len(r.failures) - ALERT_FAILURES_SHOWN} more (see `askdocs status`).")
    lines += _unreadable_lines(outcome, page_url)
    blocks = [section(head), context(counts)]
    if lines:
        blocks += sections("\n".join(lines))
    return {"text": head, "blocks": fit(blocks)}


def _unreadable_lines(outcome: RunOutcome, page_url: Callable[[str], str] | None) -> list[str]:
    """Pages used for nobody because their permissions could not be read (issue 15), by id: a title could say
    more than the channel may know; the link opens only for those Confluence lets in."""
    unreadable = outcome.permissions.unreadable if outcome.permissions is not None else {}
    lines = []
    for page_id, why in list(unreadable.items())[:ALERT_FAILURES_SHOWN]:
        name = f"page {page_id}"
        shown = link(page_url(page_id), name) if page_url else escape(name)
        lines.append(f"• {shown} used by nobody until its permissions can be read: {escape(short_error(why))}")
    if len(unreadable) > ALERT_FAILURES_SHOWN:
        lines.append(f"…and {len(unreadable) - ALERT_FAILURES_SHOWN} more pages whose permissions could not be read.")
    return lines


# ---- App Home -----------------------------------------------------------------------------------------


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def format_time(moment: datetime | None) -> str:
    if moment is None:
        return "never"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


HOW_TO_ASK = (
    "*How to ask*\n"
    "• Mention me in a channel: `@askdocs how do I request VPN access?` — I answer in the thread.\n"
    "• Send me a direct message.\n"
    "• Use `/askdocs your question` anywhere.\n"
    "• Start with `in:ENG,OPS` to search only those spaces.\n"
    "• Reply in my thread to ask a follow-up. Every answer links its sources; :+1:/:-1: tell us how it went."
)


def home_view(status: KnowledgeBaseStatus) -> dict[str, Any]:
    """The App Home tab: knowledge-base status and how to ask."""
    spaces = status.spaces
    blocks: list[Block] = [
        {"type": "header", "text": {"type": "plain_text", "text": "askdocs: answers from Confluence"}},
        section(f"*Knowledge base:* {plural(status.pages, 'page')}, "
                f"{plural(status.chunks, 'chunk')} in {plural(len(spaces), 'space')}"),
    ]
    space_lines = [
        f"• *{escape(s.space_key)}* {escape(s.name or '')} — {plural(s.pages, 'page')}, "
        f"{plural(s.chunks, 'chunk')}, "
        f"synced {format_time(s.last_synced_at)}"
        for s in spaces[:60]
    ]
    if space_lines:
        blocks += sections("\n".join(space_lines))
    last = status.last_sync
    if last is not None:
        c = last.counters
        blocks.append(section(
            f"*Last sync:* #{last.id} {escape(last.status)}, "
            f"{format_time(last.finished_at or last.started_at)} "
            f"({c.get('pages_added', 0)} added, {c.get('pages_updated', 0)} updated, "
            f"{c.get('pages_deleted', 0)} deleted, {c.get('pages_failed', 0)} failed)"))
    else:
        blocks.append(section("*Last sync:* never — an admin can run `/docsync`."))
    if status.running_sync is not None:
        blocks.append(section(f"*Sync running:* #{status.running_sync.id} since "
                              f"{format_time(status.running_sync.started_at)}"))
    next_at = format_time(status.next_sync_at) if status.next_sync_at else "not scheduled"
    blocks.append(context(f"Next scheduled sync: {next_at} · "
                          f"questions answered: {status.questions_answered}"))
    blocks += [{"type": "divider"}, section(HOW_TO_ASK)]
    return {"type": "home", "blocks": blocks[:100]}


def home_unavailable(ref: str) -> dict[str, Any]:
    return {"type": "home", "blocks": [
        {"type": "header", "text": {"type": "plain_text", "text": "askdocs: answers from Confluence"}},
        section(f":warning: The knowledge-base status is unavailable right now (ref `{ref}`)."),
        {"type": "divider"}, section(HOW_TO_ASK),
    ]}
