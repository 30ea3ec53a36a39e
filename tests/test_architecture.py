"""The layout's promises that import-linter can't see: one reader of the environment, pure modules stay light."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV_READ = re.compile(r"os\.environ(?!\.setdefault)|os\.getenv|getenv\(")


def test_only_settings_reads_the_environment() -> None:
    readers = [
        f"{path.relative_to(ROOT)}:{n}"
        for package in ("bot", "ingest", "db")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != ROOT / "bot" / "settings.py"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if ENV_READ.search(line)
    ]
    assert readers == []


def test_pure_modules_import_without_loading_an_sdk() -> None:
    pure = ["bot.answering.prompts", "bot.answering.citations", "bot.answering.ranking",
            "bot.answering.extractive", "bot.slack.blocks", "bot.slack.ops_blocks", "bot.slack.mrkdwn"]
    probe = (f"import sys; import {', '.join(pure)}; "
             "print(sorted(m for m in ('openai', 'slack_sdk', 'slack_bolt', 'asyncpg', 'aiohttp', 'torch') "
             "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
