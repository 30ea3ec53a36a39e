"""The benchmark corpus: the PostgreSQL manual as Confluence pages, built on demand and served locally."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import corpus
from bench.harness import CACHE_DIR
from bot.demo.confluence import SampleConfluence as ConfluenceEmulator

MANUAL_JSONL = CACHE_DIR / "pg-manual.jsonl"
DEMO_JSONL = Path(__file__).resolve().parent.parent / "bot" / "demo" / "pages.jsonl"
INSTALL_HINT = "apt-get update && apt-get install -y postgresql-doc-15"
SPACE_KEY = "PG"

Page = dict[str, Any]


class CorpusMissing(SystemExit):
    """The manual's HTML isn't installed: the message names the install command; exits non-zero."""


def read_pages(path: Path) -> list[Page]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def manual_pages(path: Path = MANUAL_JSONL) -> list[Page]:
    """The converted manual (~1,168 pages), converting it first when the cache is missing."""
    if not path.exists():
        if not corpus.DEFAULT_HTML_DIR.is_dir():
            raise CorpusMissing(
                f"the PostgreSQL manual is not installed ({corpus.DEFAULT_HTML_DIR} is missing); "
                f"install it with: {INSTALL_HINT}"
            )
        print(f"building the corpus into {path} (one-off) ...", file=sys.stderr)
        code = corpus.main(["--out", str(path)])
        if code != 0 or not path.exists():
            raise CorpusMissing(f"could not build the corpus (python -m bench.corpus exited {code})")
    return read_pages(path)


def demo_pages(limit: int | None = None) -> list[Page]:
    pages = read_pages(DEMO_JSONL)
    return pages[:limit] if limit else pages


def serve_pages(confluence: ConfluenceEmulator, pages: Sequence[Page], *, space_key: str = SPACE_KEY) -> int:
    """Add `pages` to the emulator, parents before children, keeping their ids; returns how many."""
    if space_key not in confluence.spaces:
        confluence.add_space(space_key, "PostgreSQL Manual")
    titles = {p["title"] for p in pages}
    pending = list(pages)
    added: set[str] = set()
    while pending:
        waiting = []
        for page in pending:
            parent = page.get("parent_title")
            if parent in titles and parent not in added:
                waiting.append(page)
                continue
            confluence.add_page(
                space_key,
                page["title"],
                page["body"],
                parent_title=parent if parent in titles else None,
                labels=tuple(page.get("labels") or ()),
                page_id=str(page["page_id"]),
            )
            added.add(page["title"])
        if len(waiting) == len(pending):  # a parent cycle: add the rest as roots
            for page in waiting:
                confluence.add_page(space_key, page["title"], page["body"], page_id=str(page["page_id"]))
            break
        pending = waiting
    return len(confluence.pages)
