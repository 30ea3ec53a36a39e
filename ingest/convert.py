"""Storage format → sections off the event loop: big pages in a worker process, small ones in a thread.

Parsing a 2 MB page takes about a second of CPU and holds the GIL for up to ~120 ms at a stretch (the HTML
parser's C calls), so even in a thread it delayed Slack acks and /healthz by hundreds of milliseconds while
four pages converted at once (issue 16, bench/loop_stall.py). A process has its own GIL. Small pages stay in
a thread: a process hop would cost more than it saves, and most pages are small.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from functools import partial

from ingest.models import Section
from ingest.storage_format import to_sections

PROCESS_ABOVE_BYTES = 200_000  # ~0.1 s of parsing: below it a thread's GIL slices stay short


class Converter:
    """Converts page bodies; owns one worker process, started on the first big page and ended by `close()`."""

    def __init__(self, *, process_above_bytes: int = PROCESS_ABOVE_BYTES) -> None:
        self._process_above_bytes = process_above_bytes
        self._pool: ProcessPoolExecutor | None = None

    async def to_sections(
        self, body: str, *, title: str, users: Mapping[str, str] | None = None,
        includes: Mapping[str, str] | None = None,
    ) -> list[Section]:
        """`storage_format.to_sections` (same arguments), run off the event loop."""
        convert = partial(to_sections, body, title=title, users=users, includes=includes)
        if len(body) + sum(len(b) for b in (includes or {}).values()) <= self._process_above_bytes:
            return await asyncio.to_thread(convert)
        if self._pool is None:
            # spawn, not fork: this process runs threads (asyncio's executor, aiohttp's resolver).
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return await asyncio.get_running_loop().run_in_executor(self._pool, convert)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
