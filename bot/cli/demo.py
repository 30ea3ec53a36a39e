"""`askdocs demo`: the sample Confluence space served over HTTP, synced by the production code, then a question.

The space is 59 pages of the PostgreSQL 15 manual (bot/demo/pages.jsonl, converted to Confluence storage
format). It needs no credentials: the emulator accepts the demo account, the embedding model is local and,
without an OpenAI key, answers are extractive.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from bot.cli.exit_codes import EXIT_OK, EXIT_PARTIAL
from bot.cli.output import ProgressBar, format_answer, summary_lines
from bot.demo.space import (
    DEFAULT_QUESTION,
    DEMO_EMAIL,
    DEMO_SPACE,
    DEMO_TOKEN,
    PREFERRED_PORT,
    SampleConfluence,
    free_port,
    load_demo_pages,
    populate,
)
from bot.operations.sync_runner import AlreadyRunning
from bot.services import build_services
from bot.settings import Settings

logger = logging.getLogger(__name__)


async def run_demo(settings: Settings, *, question: str | None, serve: bool) -> int:
    pages = load_demo_pages()
    emulator = SampleConfluence(email=DEMO_EMAIL, api_token=DEMO_TOKEN)
    populate(emulator, pages)
    base_url = await emulator.start(port=free_port(PREFERRED_PORT))
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
        async with build_services(demo_settings, reembed_on_model_change=True) as services:
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
