"""The CLI commands that need the full service graph (sync, ask, run, demo, gaps, eval)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from bot.answer import Answer, AskContext, QuestionError
from bot.exit_codes import EXIT_CONFIG, EXIT_OK, EXIT_PARTIAL
from bot.services import build_services
from bot.settings import Settings
from bot.sync_runner import AlreadyRunning, RunOutcome
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
    ]
    lines += [f"  space {key}: {why}" for key, why in outcome.failed_spaces.items()]
    lines += [f"  warning: {w}" for w in r.warnings]
    lines += [f"  failed: {f.title or f.page_id} ({f.page_id}): {f.error}" for f in r.failures[:20]]
    if outcome.error:
        lines.append(f"  error: {outcome.error}")
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


async def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    spaces = args.space or settings.confluence_spaces
    if not spaces:
        print("askdocs sync: no spaces: pass --space KEY or set CONFLUENCE_SPACES", file=sys.stderr)
        return EXIT_CONFIG
    from bot.services import confluence_factory

    confluence_factory(settings)  # fail fast on missing Confluence settings, before loading any model
    async with build_services(settings) as services:
        outcome = await services.sync.run(
            spaces=spaces, force=args.force, trigger="cli", requested_by="cli", progress=ProgressBar()
        )
    if isinstance(outcome, AlreadyRunning):
        since = outcome.run.started_at.isoformat(timespec="seconds") if outcome.run else "unknown"
        who = (outcome.run.requested_by or outcome.run.trigger) if outcome.run else "another process"
        print(f"askdocs sync: a sync is already running (since {since}, started by {who})", file=sys.stderr)
        return EXIT_PARTIAL
    if args.json:
        print(json.dumps({"run_id": outcome.run_id, "status": outcome.status, **outcome.counters(),
                          "failures": [f.__dict__ for f in outcome.report.failures]}, indent=2))
    else:
        print("\n".join(summary_lines(outcome)))
    if outcome.status == "failed":
        return EXIT_CONFIG  # nothing synced: a crash, or every space unreachable (auth, connection, listing)
    return EXIT_OK if outcome.status == "succeeded" else EXIT_PARTIAL


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


async def ask_once(settings: Settings, question: str, spaces: list[str], *, as_json: bool) -> int:
    async with build_services(settings) as services:

        async def ask() -> Answer:
            return await services.engine.answer(question, spaces=spaces or None, context=AskContext(surface="cli"))

        try:
            answer = await ask()
        except QuestionError as error:
            print(f"askdocs ask: {error}", file=sys.stderr)
            return EXIT_CONFIG
        if services.freshness is not None:
            answer = await services.freshness.fresh_answer(answer, ask)
    if as_json:
        print(json.dumps(answer.to_json(), indent=2, ensure_ascii=False))
    else:
        print(format_answer(answer))
    return EXIT_OK


async def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    return await ask_once(settings, args.question, args.space, as_json=args.json)


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from bot.runtime import run_forever

    return await run_forever(settings)


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from bot.demo.run import run_demo

    return await run_demo(settings, question=args.question, serve=args.serve)


async def cmd_gaps(args: argparse.Namespace, settings: Settings) -> int:
    from bot.gaps import print_gaps

    return await print_gaps(settings, days=args.days, as_json=args.json)


async def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from bot.evaluate import run_eval

    thresholds: dict[str, Any] = {
        "hit_at_5": args.min_hit_at_5, "mrr": args.min_mrr, "refusal_accuracy": args.min_refusal_accuracy,
    }
    return await run_eval(settings, args.file, thresholds=thresholds, as_json=args.json)
