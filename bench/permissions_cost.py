"""Permission refresh cost (issue 15): requests and seconds to re-read who may read what, no content fetched.

One space of N pages (a tree three levels deep, every 10th page restricted to one of 5 groups of 40, every 25th to
one user) in the Confluence emulator, 200 users; the pages are already indexed (rows only, no chunks). The
refresh is the product's: ingest.permissions.refresh_permissions through the real ConfluenceClient into
Postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import append_result, bench_database, machine_line, prepare_environment, table
from bot.demo.confluence import SampleConfluence
from db.connect import open_database
from db.models import PageRecord
from db.store import AccessStore, SyncStore
from ingest.confluence import ConfluenceClient
from ingest.permissions import refresh_permissions

EMAIL, TOKEN = "bench@example.com", "bench-token"


def build_site(site: SampleConfluence, pages: int) -> list[str]:
    for n in range(200):
        site.add_user(f"acc-{n}", f"User {n}", email=f"user{n}@example.com")
    for g in range(5):
        site.add_group(f"team-{g}")
        for n in range(g * 40, g * 40 + 40):
            site.add_member(f"team-{g}", f"acc-{n}")
    ids: list[str] = []
    for n in range(pages):
        parent = site.pages[ids[(n - 1) // 10]].title if n and (n - 1) // 10 < len(ids) and n % 3 else None
        page_id = site.add_page("BENCH", f"Page {n}", "<p>text</p>", parent_title=parent)
        if n % 10 == 0:
            site.restrict_page(page_id, groups=[f"team-{n // 10 % 5}"])
        elif n % 25 == 0:
            site.restrict_page(page_id, users=[f"acc-{n % 200}"])
        ids.append(page_id)
    return ids


async def measure(pages: int, dsn: str) -> dict[str, Any]:
    site = SampleConfluence(email=EMAIL, api_token=TOKEN)
    await site.start()
    database = await open_database(dsn, data_dir=Path(tempfile.gettempdir()), embedding_model="bench-384",
                                   embedding_dimension=384)
    try:
        ids = build_site(site, pages)
        store = SyncStore(database.pool)
        await store.upsert_space("BENCH")
        for page_id in ids:
            await store.save_page_metadata(PageRecord(page_id, "BENCH", site.pages[page_id].title, "u", 1, "c"))
        site.reset_records()
        started = time.perf_counter()
        async with ConfluenceClient(site.base_url or "", email=EMAIL, api_token=TOKEN) as client:
            report = await refresh_permissions(["BENCH"], source=client, store=AccessStore(database.pool),
                                               all_users_group="confluence-users")
        seconds = time.perf_counter() - started
        assert not report.unreadable and report.pages_checked == pages
        return {"pages": pages, "requests": len(site.requests), "seconds": round(seconds, 2),
                "restricted": report.restricted_pages, "bodies": site.bodies_served}
    finally:
        await database.close()
        await site.stop()


async def run(sizes: list[int]) -> list[dict[str, Any]]:
    results = []
    for size in sizes:
        async with bench_database(f"askdocs_bench_permissions_{size}") as dsn:
            results.append(await measure(size, dsn))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.permissions_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, action="append", help="space sizes (default 100, 1000, 5000)")
    args = parser.parse_args(argv)
    prepare_environment()
    results = asyncio.run(run(args.pages or [100, 1000, 5000]))
    print(machine_line())
    print(table(["pages", "restricted", "requests", "seconds", "bodies"],
                [[r["pages"], r["restricted"], r["requests"], r["seconds"], r["bodies"]] for r in results],
                title="permission refresh, one space"))
    append_result("permissions_cost", {"runs": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
