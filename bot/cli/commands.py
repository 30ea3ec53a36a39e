"""The CLI commands that need the full service graph (sync, ask, run, demo, gaps, eval)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from bot.answering.models import Answer, AskContext, QuestionError
from bot.cli.exit_codes import EXIT_CONFIG, EXIT_OK, EXIT_PARTIAL
from bot.cli.output import ProgressBar, format_answer, format_gaps, summary_lines
from bot.operations.gaps import collect_gaps, gaps_json
from bot.operations.golden import (
    THRESHOLD_METRICS,
    GoldenFileError,
    below_thresholds,
    format_report,
    read_golden,
    report_json,
    run_golden,
    summarise,
)
from bot.operations.sync_runner import AlreadyRunning
from bot.services import build_services
from bot.settings import Settings
from ingest.errors import one_line


async def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    spaces = args.space or settings.confluence_spaces
    if not spaces:
        print("askdocs sync: no spaces: pass --space KEY or set CONFLUENCE_SPACES", file=sys.stderr)
        return EXIT_CONFIG
    from bot.services import confluence_factory

    confluence_factory(settings)  # fail fast on missing Confluence settings, before loading any model
    async with build_services(settings, reembed_on_model_change=True) as services:
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


async def ask_once(
    settings: Settings, question: str, spaces: list[str], *, as_json: bool, as_user: str | None = None,
) -> int:
    async with build_services(settings) as services:
        # per-user permissions: the pages `as_user` (an email) may read; without it, organisation-wide ones.
        audience = await services.identity.for_email(as_user)

        async def ask() -> Answer:
            return await services.engine.answer(question, spaces=spaces or None, context=AskContext(surface="cli"),
                                                audience=audience)

        try:
            answer = await ask()
        except QuestionError as error:
            print(f"askdocs ask: {one_line(error)}", file=sys.stderr)
            return EXIT_CONFIG
        if services.freshness is not None:
            answer = await services.freshness.fresh_answer(answer, ask)
    if as_json:
        print(json.dumps(answer.to_json(), indent=2, ensure_ascii=False))
    else:
        print(format_answer(answer))
    return EXIT_OK


async def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    return await ask_once(settings, args.question, args.space, as_json=args.json, as_user=args.as_user)


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from bot.runtime import run_forever

    return EXIT_OK if await run_forever(settings) else EXIT_PARTIAL


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from bot.cli.demo import run_demo

    return await run_demo(settings, question=args.question, serve=args.serve)


async def cmd_gaps(args: argparse.Namespace, settings: Settings) -> int:
    return await print_gaps(settings, days=args.days, as_json=args.json)


async def print_gaps(
    settings: Settings, *, days: int, as_json: bool, limit: int = 10, out: TextIO | None = None
) -> int:
    """`askdocs gaps`: print the top groups; 0, or 2 for a bad `--days`."""
    stream = out or sys.stdout
    if days < 1:
        print("askdocs gaps: --days must be at least 1", file=sys.stderr)
        return EXIT_CONFIG
    async with build_services(settings) as services:
        groups = await collect_gaps(services.database.pool, services.embedder, days=days, limit=limit)
    if as_json:
        print(json.dumps(gaps_json(groups, days=days), indent=2, ensure_ascii=False), file=stream)
    else:
        print(format_gaps(groups, days=days), file=stream)
    return EXIT_OK


async def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    thresholds: dict[str, Any] = {
        "hit_at_5": args.min_hit_at_5, "mrr": args.min_mrr, "refusal_accuracy": args.min_refusal_accuracy,
    }
    return await run_eval(settings, args.file, thresholds=thresholds, as_json=args.json)


async def run_eval(
    settings: Settings,
    file: str | Path,
    *,
    thresholds: Mapping[str, float],
    as_json: bool,
    out: TextIO | None = None,
) -> int:
    """0 when every metric meets its threshold, 1 when one doesn't, 2 for a file that can't be used."""
    stream = out or sys.stdout
    unknown = set(thresholds) - THRESHOLD_METRICS
    if unknown:
        raise ValueError(f"unknown thresholds: {sorted(unknown)}")
    try:
        items = read_golden(file)
    except GoldenFileError as error:
        print(f"askdocs eval: {one_line(error)}", file=sys.stderr)
        return EXIT_CONFIG
    async with build_services(settings) as services:
        results = await run_golden(services.engine, items)
    failures = below_thresholds(summarise(results), thresholds)
    if as_json:
        print(json.dumps(report_json(results, failures=failures), indent=2, ensure_ascii=False), file=stream)
    else:
        print(format_report(results, failures=failures), file=stream)
    return EXIT_PARTIAL if failures else EXIT_OK
