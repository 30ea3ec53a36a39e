"""The sync-cost benchmark's machinery, end to end on 30 demo pages: ours against the seed design.

Not a timing test: it checks that the incremental sync downloads fewer bodies and embeds fewer tokens than
the seed design, and that a no-change sync costs nothing, with the same counters the benchmark reports.
"""

from __future__ import annotations

from bench.manual import demo_pages
from bench.sync_cost import check_targets, edited_body, measure_sync_cost, report
from ingest.storage_format import content_checksum, to_sections


def test_markup_only_edits_keep_the_visible_text() -> None:
    page = next(p for p in demo_pages() if "<p>" in p["body"] and len(p["body"]) > 2000)
    before = content_checksum(to_sections(page["body"], title=page["title"]))
    for kind in ("whitespace", "attribute", "markup"):
        after = edited_body(page["body"], kind, 1)
        assert after != page["body"]
        assert content_checksum(to_sections(after, title=page["title"])) == before, kind
    text = edited_body(page["body"], "text", 1)
    assert content_checksum(to_sections(text, title=page["title"])) != before


async def test_incremental_sync_costs_less_than_the_seed_design(database_dsn: str) -> None:
    result = await measure_sync_cost(demo_pages(30), dsn=database_dsn, edit_count=3)
    ours, seed = result.cost("ours", "incremental"), result.cost("seed", "incremental")
    truth = result.truth
    assert (truth.pages_edited, truth.pages_changed) == (3, 2)
    assert truth.invisible_detected_as_changed == []

    assert ours.bodies == truth.pages_edited < seed.bodies == 30
    assert 0 < ours.tokens < seed.tokens
    assert ours.server_tokens < seed.server_tokens
    assert ours.tokens == truth.tokens_changed  # only chunks whose text is new were embedded

    first_ours, first_seed = result.cost("ours", "first sync"), result.cost("seed", "first sync")
    assert first_ours.bodies == first_seed.bodies == 30
    assert first_ours.tokens == first_seed.tokens > 0

    idle = result.cost("ours", "no change")
    assert (idle.bodies, idle.chunks_embedded, idle.tokens) == (0, 0, 0)
    assert result.cost("seed", "no change").bodies == 30

    met = {c.name: c.met for c in check_targets(result)}
    assert met["embedding tokens / tokens of chunks really changed"]
    assert "Ratios ours/seed" in report(result)
