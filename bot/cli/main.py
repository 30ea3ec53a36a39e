"""The `askdocs` command: parse arguments, build services, run one coroutine, map the outcome to an exit code."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from bot.cli.exit_codes import EXIT_CONFIG, EXIT_OK
from bot.operations.status import read_status
from bot.settings import Settings, SettingsError, load_settings
from db.connect import open_database
from db.errors import DATABASE_UNREACHABLE, DatabaseError
from ingest.errors import one_line

logger = logging.getLogger(__name__)

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="askdocs",
        description="Answer questions from your Confluence wiki in Slack, with cited sources.",
    )
    parser.add_argument("--env-file", default=".env", help="read settings from this file too (default: .env)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("run", help="run the Slack bot, HTTP API and scheduler in one process")

    sync = commands.add_parser("sync", help="sync Confluence spaces into the knowledge base now")
    sync.add_argument("--space", action="append", default=[], metavar="KEY",
                      help="space key to sync (repeatable; default: CONFLUENCE_SPACES)")
    sync.add_argument("--force", action="store_true",
                      help="re-fetch and re-embed every page, and allow large deletions")
    sync.add_argument("--json", action="store_true", help="print the summary as JSON")

    ask = commands.add_parser("ask", help="answer a question from the knowledge base")
    ask.add_argument("question", help="the question, in quotes")
    ask.add_argument("--space", action="append", default=[], metavar="KEY", help="only search this space")
    ask.add_argument("--json", action="store_true", help="print the answer and sources as JSON")
    ask.add_argument("--as-user", default=None, metavar="EMAIL",
                     help="CONFLUENCE_PERMISSIONS=per-user: answer from the pages this person may read "
                          "(default: organisation-wide pages only)")

    status = commands.add_parser("status", help="show what the knowledge base holds")
    status.add_argument("--json", action="store_true", help="print as JSON")

    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--reset-embeddings", action="store_true",
                         help="forget every embedding so another embedding model can be used")

    demo = commands.add_parser("demo", help="sync a sample space and answer a question, no credentials needed")
    demo.add_argument("--question", default=None, help="the question to ask after the sync")
    demo.add_argument("--serve", action="store_true", help="keep the sample Confluence running afterwards")

    gaps = commands.add_parser("gaps", help="list what people ask that Confluence doesn't answer")
    gaps.add_argument("--days", type=int, default=30)
    gaps.add_argument("--json", action="store_true")

    evaluate = commands.add_parser("eval", help="score answers against a file of golden questions")
    evaluate.add_argument("file", help="YAML or JSONL golden questions")
    evaluate.add_argument("--min-hit-at-5", type=float, default=0.0)
    evaluate.add_argument("--min-mrr", type=float, default=0.0)
    evaluate.add_argument("--min-refusal-accuracy", type=float, default=0.0)
    evaluate.add_argument("--json", action="store_true")
    return parser


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    database = await _open(settings)
    try:
        status = await read_status(
            database.pool, configured_model=settings.resolved_embedding_model,
            configured_spaces=settings.confluence_spaces,
        )
    finally:
        await database.close()
    if args.json:
        print(json.dumps(status.to_json(), indent=2))
        return EXIT_OK
    print(f"embedding model: {status.embedding_model or '(not bound yet)'} "
          f"(configured: {status.configured_embedding_model})")
    if not status.spaces:
        print("the knowledge base is empty: run `askdocs sync` (or `askdocs demo`)")
    for space in status.spaces:
        synced = space.last_synced_at.isoformat(timespec="seconds") if space.last_synced_at else "never"
        print(f"{space.space_key:<12} {space.pages:>6} pages {space.blogposts:>4} blog posts "
              f"{space.comments:>5} comments {space.attachments:>5} files {space.chunks:>7} chunks  "
              f"last synced {synced}")
    if status.last_sync:
        run = status.last_sync
        print(f"last sync #{run.id}: {run.status}, started {run.started_at.isoformat(timespec='seconds')}")
    if status.running_sync:
        print(f"sync #{status.running_sync.id} running since "
              f"{status.running_sync.started_at.isoformat(timespec='seconds')}")
    return EXIT_OK


async def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from db.migrate import reset_embeddings

    database = await _open(settings)
    try:
        if args.reset_embeddings:
            async with database.pool.acquire() as conn:
                removed = await reset_embeddings(conn)
            print(f"removed {removed} chunks; the next start binds the configured embedding model")
        else:
            print("database is up to date")
    finally:
        await database.close()
    return EXIT_OK


async def _open(settings: Settings):  # type: ignore[no-untyped-def]
    dsn = settings.database_url.get_secret_value() if settings.database_url else None
    return await open_database(dsn, data_dir=settings.askdocs_data_dir)


def _commands() -> dict[str, Command]:
    from bot.cli import commands

    return {
        "status": cmd_status,
        "migrate": cmd_migrate,
        "run": commands.cmd_run,
        "sync": commands.cmd_sync,
        "ask": commands.cmd_ask,
        "demo": commands.cmd_demo,
        "gaps": commands.cmd_gaps,
        "eval": commands.cmd_eval,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.env_file)
    except SettingsError as error:
        print(f"askdocs: {one_line(error)}", file=sys.stderr)
        return EXIT_CONFIG
    from bot.logs import configure_logging

    level = settings.log_level or ("INFO" if args.command == "run" else "WARNING")
    configure_logging(level=level, fmt=settings.log_format, secrets=settings.secrets())
    command = _commands()[args.command]
    try:
        return asyncio.run(command(args, settings))
    except (DatabaseError, SettingsError) as error:
        print(f"askdocs: {one_line(error)}", file=sys.stderr)
        return EXIT_CONFIG
    except DATABASE_UNREACHABLE as error:
        print(f"askdocs: the database became unreachable: {type(error).__name__}: {one_line(error)}",
              file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
