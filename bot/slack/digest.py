"""The weekly knowledge-gaps digest posted to the ops channel (Block Kit)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from slack_sdk.web.async_client import AsyncWebClient

from bot.operations.gaps import GapGroup, collect_gaps, reasons_text
from bot.slack.mrkdwn import escape, truncate
from ingest.embedders import Embedder

DIGEST_TITLE = "What your team asks that Confluence doesn't answer"
DIGEST_TEXT_CHARS = 300


def gaps_digest_blocks(groups: Sequence[GapGroup], *, days: int) -> dict[str, Any]:
    """The weekly digest as chat.postMessage keyword arguments (`text` fallback + Block Kit `blocks`).

    Question text is escaped (`&`, `<`, `>`, so `<!channel>` shows as text) and @here/@channel are defused.
    """
    total = sum(g.count for g in groups)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": DIGEST_TITLE}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": (
            f"{total} questions in the last {days} days were refused, got a 👎 or had only weak evidence. "
            "A page on the top topics answers them next time."
        )}]},
    ]
    for g in groups:
        lines = [f"*{g.count}×* {truncate(escape(g.label), DIGEST_TEXT_CHARS)}"]
        lines += [f"• {truncate(escape(example), DIGEST_TEXT_CHARS)}" for example in g.examples[1:]]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}})
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": reasons_text(g.reasons)}]})
    blocks = blocks[:50]  # Block Kit: at most 50 blocks a message
    return {"text": f"{DIGEST_TITLE}: {len(groups)} topics from the last {days} days", "blocks": blocks}


async def post_gaps_digest(
    pool: asyncpg.Pool, embedder: Embedder, client: AsyncWebClient, channel: str, *, days: int = 7,
    limit: int = 5,
) -> bool:
    """Post the weekly digest to `channel`; True when posted, False when there was nothing to report."""
    groups = await collect_gaps(pool, embedder, days=days, limit=limit)
    if not groups:
        return False
    await client.chat_postMessage(channel=channel, **gaps_digest_blocks(groups, days=days))
    return True
