"""What the CLI prints: the sync summary, a progress bar, answers with their sources, gap reports."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from bot.answering.models import Answer
from bot.operations.gaps import GapGroup, reasons_text
from bot.operations.sync_runner import RunOutcome
from ingest.sync import Progress


def summary_lines(outcome: RunOutcome) -> list[str]:
    r = outcome.report
    lines = [
        f"sync #{outcome.run_id} {outcome.status} in {outcome.duration_s:.1f}s — spaces: {', '.join(r.spaces)}",
        f"  pages: {r.pages_seen} seen, {r.pages_added} added, {r.pages_updated} updated, "
        f"{r.pages_unchanged} unchanged, {r.pages_deleted} deleted, {r.pages_skipped} skipped, "
        f"{r.pages_failed} failed",
        f"  chunks: {r.chunks_embedded} embedded ({r.embedding_tokens} tokens), {r.chunks_reused} reused; "
        f"bodies downloaded: {r.bodies_fetched}",
        f"  also: {r.blogposts_seen} blog posts seen, {r.comments_indexed} comments indexed; files: "
        f"{r.attachments_indexed} indexed, {r.attachments_unchanged} unchanged, {r.attachments_downloaded} "
        f"downloaded, {r.attachments_deleted} deleted, {r.attachments_skipped} skipped, {r.attachments_failed} failed",
    ]
    lines += [f"  skipped file: {s}" for s in r.skipped_files[:20]]
    lines += [f"  space {key}: {why}" for key, why in outcome.failed_spaces.items()]
    lines += [f"  warning: {w}" for w in r.warnings]
    lines += [f"  failed: {f.title or f.page_id} ({f.page_id}): {f.error}" for f in r.failures[:20]]
    lines += permission_lines(outcome)
    if outcome.error:
        lines.append(f"  error: {outcome.error}")
    return lines


def permission_lines(outcome: RunOutcome) -> list[str]:
    """CONFLUENCE_PERMISSIONS=per-user: what the permission refresh found, and the pages used for nobody."""
    p = outcome.permissions
    if p is None:
        return []
    lines = [f"  permissions: {p.pages_checked} pages checked, {p.restricted_pages} restricted, "
             f"{p.org_wide_pages} organisation-wide, {len(p.unreadable)} used by nobody; "
             f"{p.groups} groups, {p.accounts} accounts"]
    lines += [f"  used by nobody until its permissions can be read: page {page_id}: {why}"
              for page_id, why in list(p.unreadable.items())[:20]]
    return lines


class ProgressBar:
    """A one-line progress bar on a terminal; silent when output is piped."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self._stream = stream
        self._enabled = stream.isatty()

    async def __call__(self, run_id: int, step: Progress) -> None:
        if not self._enabled or step.total == 0:
            return
        width = 30
        filled = int(width * step.done / step.total)
        self._stream.write(
            f"\r{step.space_key}: [{'#' * filled}{'.' * (width - filled)}] {step.done}/{step.total} pages"
        )
        if step.done == step.total:
            self._stream.write("\n")
        self._stream.flush()


def format_answer(answer: Answer) -> str:
    lines = [answer.text]
    if answer.note:
        lines.insert(0, f"({answer.note})")
    if answer.sources:
        lines.append("")
        lines += [f"[{s.n}] {s.title} — {s.url}" for s in answer.sources]
    if answer.refused and answer.closest:
        lines.append("")
        lines.append("Closest pages:")
        lines += [f"  • {s.title} — {s.url}" for s in answer.closest]
    return "\n".join(lines)


def format_gaps(groups: Sequence[GapGroup], *, days: int) -> str:
    if not groups:
        return f"No knowledge gaps in the last {days} days: every question found a confident answer."
    total = sum(g.count for g in groups)
    lines = [f"Knowledge gaps in the last {days} days: {total} questions in {len(groups)} groups", ""]
    for g in groups:
        lines.append(f"{g.count:>4}×  {g.label}")
        lines += [f"       – {example}" for example in g.examples[1:]]
        lines.append(f"       {reasons_text(g.reasons)}; last asked {g.last_asked:%Y-%m-%d %H:%M}")
    return "\n".join(lines)
