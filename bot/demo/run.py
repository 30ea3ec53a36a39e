"""`askdocs demo`: a sample Confluence space served over HTTP, synced by the production code, then a question.

The space is 59 pages of the PostgreSQL 15 manual (bot/demo/pages.jsonl, converted to Confluence storage
format). It needs no credentials: the emulator accepts the demo account, the embedding model is local and,
without an OpenAI key, answers are extractive.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from importlib import resources
from typing import Any

from bot.commands import ProgressBar, format_answer, summary_lines
from bot.demo.confluence_server import ConfluenceEmulator
from bot.exit_codes import EXIT_OK, EXIT_PARTIAL
from bot.services import build_services
from bot.settings import Settings
from bot.sync_runner import AlreadyRunning

logger = logging.getLogger(__name__)

DEMO_SPACE = "PG"
DEMO_EMAIL = "demo@example.com"
DEMO_TOKEN = "demo-token"
PREFERRED_PORT = 8765  # stable, so page links stay the same between `askdocs demo --serve` runs
DEFAULT_QUESTION = "How do I make sure VACUUM runs automatically?"


def load_demo_pages() -> list[dict[str, Any]]:
    text = (resources.files("bot.demo") / "pages.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def populate(emulator: ConfluenceEmulator, pages: list[dict[str, Any]]) -> None:
    """Add the pages with parents before children (the file is in that order)."""
    emulator.add_space(DEMO_SPACE, "PostgreSQL Manual (demo)")
    titles = {p["title"] for p in pages}
    for page in pages:
        parent = page.get("parent_title")
        emulator.add_page(
            DEMO_SPACE, page["title"], page["body"], parent_title=parent if parent in titles else None,
            labels=tuple(page.get("labels") or ()), page_id=page.get("page_id"),
        )


def _free_port(preferred: int) -> int:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return 0


async def run_demo(settings: Settings, *, question: str | None, serve: bool) -> int:
    pages = load_demo_pages()
    emulator = ConfluenceEmulator(email=DEMO_EMAIL, api_token=DEMO_TOKEN)
    populate(emulator, pages)
    base_url = await emulator.start(port=_free_port(PREFERRED_PORT))
    try:
        print(f"Sample Confluence space '{DEMO_SPACE}' ({len(pages)} pages of the PostgreSQL 15 manual) "
              f"at {base_url}/wiki")
        demo_settings = settings.model_copy(update={
            "confluence_base_url": base_url, "confluence_email": DEMO_EMAIL,
            "confluence_api_token": _secret(DEMO_TOKEN), "confluence_pat": None,
            "confluence_spaces": [DEMO_SPACE],
        })
        print(f"Embedding model: {settings.resolved_embedding_model} ({settings.embedding_provider}); "
              f"answers: {'LLM ' + settings.llm_model if settings.llm_provider == 'openai' else 'extractive'}")
        async with build_services(demo_settings) as services:
            print("Syncing (the first run embeds every chunk; later runs only what changed)…")
            outcome = await services.sync.run(spaces=[DEMO_SPACE], trigger="cli", requested_by="demo",
                                              progress=ProgressBar(sys.stdout))
            if isinstance(outcome, AlreadyRunning):
                print("Another askdocs process is syncing this knowledge base; try again when it finishes.")
                return EXIT_PARTIAL
            print("\n".join(summary_lines(outcome)))
            asked = question or DEFAULT_QUESTION
            answer = await services.engine.answer(asked)
            print(f"\nQ: {asked}\n")
            print(format_answer(answer))
            print("\nAsk your own: askdocs ask \"how do I restore a pg_dump backup?\"")
            if serve:
                print(f"Serving the sample Confluence at {base_url}/wiki — Ctrl-C to stop.")
                await _wait_forever()
    finally:
        await emulator.stop()
    return EXIT_OK if outcome.status == "succeeded" else EXIT_PARTIAL


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


async def _wait_forever() -> None:
    import asyncio

    await asyncio.Event().wait()
