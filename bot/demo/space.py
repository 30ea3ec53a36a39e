"""The sample space behind `askdocs demo`: 59 pages of the PostgreSQL 15 manual in Confluence storage format.

`bot/demo/pages.jsonl` holds the pages (built by `python -m bench.corpus --demo-out`); `populate` loads them
into a SampleConfluence, parents before children.
"""

from __future__ import annotations

import json
import socket
from importlib import resources
from typing import Any

from bot.demo.confluence import SampleConfluence

__all__ = ["DEFAULT_QUESTION", "DEMO_EMAIL", "DEMO_SPACE", "DEMO_TOKEN", "PREFERRED_PORT", "SampleConfluence",
           "free_port", "load_demo_pages", "populate"]

DEMO_SPACE = "PG"
DEMO_EMAIL = "demo@example.com"
DEMO_TOKEN = "demo-token"
PREFERRED_PORT = 8765  # stable, so page links stay the same between `askdocs demo --serve` runs
DEFAULT_QUESTION = "How do I make sure VACUUM runs automatically?"


def load_demo_pages() -> list[dict[str, Any]]:
    text = (resources.files("bot.demo") / "pages.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def populate(emulator: SampleConfluence, pages: list[dict[str, Any]]) -> None:
    """Add the pages with parents before children (the file is in that order)."""
    emulator.add_space(DEMO_SPACE, "PostgreSQL Manual (demo)")
    titles = {p["title"] for p in pages}
    for page in pages:
        parent = page.get("parent_title")
        emulator.add_page(
            DEMO_SPACE, page["title"], page["body"], parent_title=parent if parent in titles else None,
            labels=tuple(page.get("labels") or ()), page_id=page.get("page_id"),
        )


def free_port(preferred: int) -> int:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return 0
