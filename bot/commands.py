"""The CLI commands that need the full service graph (sync, ask, run, demo, gaps, eval)."""

from __future__ import annotations

import argparse
import sys

from bot.settings import Settings


async def _not_ready(name: str) -> int:
    print(f"askdocs {name}: not available in this build yet", file=sys.stderr)
    return 2


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    return await _not_ready("run")


async def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    return await _not_ready("sync")


async def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    return await _not_ready("ask")


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    return await _not_ready("demo")


async def cmd_gaps(args: argparse.Namespace, settings: Settings) -> int:
    return await _not_ready("gaps")


async def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    return await _not_ready("eval")
