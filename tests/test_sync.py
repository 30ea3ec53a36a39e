"""Confluence → knowledge base through the real client, converter, chunker, embedder and database."""

from __future__ import annotations

import asyncpg
import pytest

from bot.operations.sync_runner import AlreadyRunning, RunOutcome
from bot.services import build_services
from db.errors import EmbeddingModelMismatch
from tests.wiki import add_samples, add_team_pages, sample


async def sync(services, *, force: bool = False, spaces=("ENG",)) -> RunOutcome:  # type: ignore[no-untyped-def]
    outcome = await services.sync.run(spaces=list(spaces), force=force, trigger="cli", requested_by="test")
    assert isinstance(outcome, RunOutcome)
    return outcome


async def page_rows(services) -> dict[str, asyncpg.Record]:  # type: ignore[no-untyped-def]
    async with services.database.pool.acquire() as conn:
        rows = await conn.fetch("SELECT page_id, version, checksum, synced_at, title FROM pages")
    return {r["page_id"]: r for r in rows}


async def chunk_texts(services, page_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    async with services.database.pool.acquire() as conn:
        rows = await conn.fetch("SELECT content FROM chunks WHERE page_id = $1 ORDER BY chunk_index", page_id)
    return [r["content"] for r in rows]


async def test_first_sync_indexes_every_page_then_changes_cost_only_what_changed(
    confluence, openai_emulator, services
) -> None:
    ids = add_team_pages(confluence, "ENG", 240)
    first = await sync(services)
    assert first.status == "succeeded"
    assert first.report.pages_added == 240 and first.report.bodies_fetched == 240
    assert len(await page_rows(services)) == 240
    assert first.report.chunks_embedded > 240

    # Identical sections across pages (same text, same title) are embedded once, not per page.
    before = await page_rows(services)
    confluence.reset_records()
    embedded_before = len(openai_emulator.embedded_texts)

    confluence.edit_page(ids[0], body=confluence.pages[ids[0]].body + "<p>Rollbacks need approval from Dana.</p>")
    body = confluence.pages[ids[1]].body
    cut = body.index("</p>")
    confluence.edit_page(ids[1], body=body[:cut] + " Ask in #it-help first." + body[cut:])
    # A markup-only edit: a new version whose visible text is the same.
    old = confluence.pages[ids[2]].body
    confluence.edit_page(ids[2], body=old.replace("<p>", '<p class="auto-cursor-target">', 1))
    for gone in ids[3:5]:
        confluence.delete_page(gone)
    confluence.archive_page(ids[5])

    second = await sync(services)
    r = second.report
    assert second.status == "succeeded"
    assert r.bodies_fetched == 3 and confluence.bodies_served == 3
    assert (r.pages_updated, r.pages_deleted) == (2, 3)
    assert r.pages_unchanged == 240 - 3 - 3 + 1  # the markup-only edit counts as unchanged

    new_texts = openai_emulator.embedded_texts[embedded_before:]
    # Only chunks whose text changed were embedded: the appended sentence and the edited paragraph.
    assert 1 <= r.chunks_embedded <= 4 and len(new_texts) == r.chunks_embedded
    assert any("Rollbacks need approval from Dana." in t for t in new_texts)
    assert any("Ask in #it-help first." in t for t in new_texts)
    assert r.chunks_reused > 0

    after = await page_rows(services)
    assert set(after) == set(before) - {ids[3], ids[4], ids[5]}
    untouched = set(after) - {ids[0], ids[1], ids[2]}
    assert all(after[p]["synced_at"] == before[p]["synced_at"] for p in untouched)
    assert after[ids[2]]["version"] == before[ids[2]]["version"] + 1
    assert after[ids[2]]["checksum"] == before[ids[2]]["checksum"]
    assert any("Rollbacks need approval from Dana." in t for t in await chunk_texts(services, ids[0]))

    third = await sync(services)
    assert third.report.bodies_fetched == 0 and third.report.chunks_embedded == 0


async def test_a_listing_that_fails_halfway_deletes_nothing(confluence, services) -> None:
    ids = add_team_pages(confluence, "ENG", 270)
    await sync(services)
    for page_id in ids[:10]:
        confluence.delete_page(page_id)
    confluence.fail_listing_after(pages=250)  # the second result page of the listing fails, persistently
    outcome = await sync(services)
    assert outcome.status == "failed"
    assert "ENG" in outcome.failed_spaces and "nothing deleted" in outcome.failed_spaces["ENG"]
    assert len(await page_rows(services)) == 270

    confluence.fail_listing_after(None)
    healed = await sync(services)
    assert healed.status == "succeeded" and healed.report.pages_deleted == 10
    assert len(await page_rows(services)) == 260


async def test_mass_deletion_guard_needs_force(confluence, services) -> None:
    ids = add_team_pages(confluence, "ENG", 20)
    await sync(services)
    for page_id in ids[:15]:
        confluence.delete_page(page_id)
    guarded = await sync(services)
    assert guarded.report.pages_deleted == 0
    assert any("not deleting" in w for w in guarded.report.warnings)
    assert len(await page_rows(services)) == 20
    forced = await sync(services, force=True)
    assert forced.report.pages_deleted == 15 and len(await page_rows(services)) == 5


async def test_rate_limits_and_server_errors_are_survived(confluence, services) -> None:
    add_team_pages(confluence, "ENG", 60)
    confluence.fail_next(2, status=429, retry_after=1)
    confluence.fail_next(2, status=503)
    confluence.fail_next(3, status=500, path_contains="/api/v2/pages/")
    outcome = await sync(services)
    assert outcome.status == "succeeded", outcome.report.failures
    assert outcome.report.pages_added == 60


async def test_a_page_failing_mid_write_keeps_its_previous_version(confluence, services) -> None:
    ids = add_samples(confluence)
    await sync(services)
    page_id = ids["Runbook Payments Deploy"]
    previous = await chunk_texts(services, page_id)
    before = (await page_rows(services))[page_id]
    # A fault inside the real database: the second chunk insert of the poisoned text raises.
    async with services.database.pool.acquire() as conn:
        await conn.execute("""
            CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.content LIKE '%POISON%' THEN RAISE EXCEPTION 'disk full (simulated)'; END IF;
              RETURN NEW;
            END $$;
            CREATE TRIGGER poison BEFORE INSERT ON chunks FOR EACH ROW EXECUTE FUNCTION poison();
        """)
    body = confluence.pages[page_id].body + "<h1>Appendix</h1><p>POISON pill paragraph.</p>"
    confluence.edit_page(page_id, body=body)
    other = ids["Hr Leave Policy"]
    confluence.edit_page(other, body=sample("hr_leave_policy") + "<p>Sabbaticals after five years.</p>")

    outcome = await sync(services)
    assert outcome.status == "partial"
    assert [f.page_id for f in outcome.report.failures] == [page_id]
    assert "disk full" in outcome.report.failures[0].error
    assert await chunk_texts(services, page_id) == previous
    assert (await page_rows(services))[page_id]["version"] == before["version"]
    assert outcome.report.pages_updated == 1  # the other page went through
    async with services.database.pool.acquire() as conn:
        failures = await conn.fetch("SELECT page_id, error FROM sync_failures WHERE run_id = $1",
                                    outcome.run_id)
        assert [r["page_id"] for r in failures] == [page_id]
        await conn.execute("DROP TRIGGER poison ON chunks")

    retried = await sync(services)
    assert retried.status == "succeeded" and retried.report.pages_updated == 1
    assert any("POISON" in t for t in await chunk_texts(services, page_id))


async def test_force_reembeds_everything(confluence, openai_emulator, services) -> None:
    add_samples(confluence)
    first = await sync(services)
    forced = await sync(services, force=True)
    assert forced.report.bodies_fetched == first.report.bodies_fetched
    assert forced.report.chunks_embedded == first.report.chunks_embedded + first.report.chunks_reused
    assert forced.report.chunks_reused == 0


async def test_restricted_and_forbidden_pages_stay_out(confluence, services) -> None:
    ids = add_samples(confluence)
    secret = confluence.add_page("ENG", "Salary Bands", "<p>Band L5 pays 150k.</p>", restricted=True)
    await sync(services)
    assert await chunk_texts(services, secret) == []
    confluence.forbid_page(ids["Oncall Handbook"])
    confluence.edit_page(ids["Oncall Handbook"], body=sample("oncall_handbook") + "<p>new</p>")
    outcome = await sync(services)
    assert outcome.report.pages_skipped == 1 and outcome.status == "succeeded"
    assert ids["Oncall Handbook"] not in await page_rows(services)


async def test_second_sync_at_once_says_one_is_running(confluence, services) -> None:
    add_team_pages(confluence, "ENG", 30)
    confluence.slow_next(1.0, n=1, path_contains="/pages")
    first = await services.sync.start(spaces=["ENG"], trigger="cli", requested_by="alice")
    second = await services.sync.start(spaces=["ENG"], trigger="slack", requested_by="U2")
    assert isinstance(second, AlreadyRunning)
    assert second.run is not None and second.run.requested_by == "alice"
    assert not isinstance(first, AlreadyRunning)
    assert (await first.wait()).status == "succeeded"


@pytest.mark.parametrize("space", ["ENG"])
async def test_moved_page_leaves_the_space(confluence, services, space: str) -> None:
    ids = add_samples(confluence, space)
    confluence.add_space("OPS", "Operations")
    await sync(services)
    confluence.move_page(ids["Staging Environment"], "OPS")
    outcome = await sync(services)
    assert outcome.report.pages_deleted == 1
    assert ids["Staging Environment"] not in await page_rows(services)


async def test_failed_pages_are_reported_with_a_working_link(confluence, openai_emulator, services) -> None:
    ids = add_samples(confluence)
    await sync(services)
    page_id = ids["Howto Vpn Setup"]
    confluence.edit_page(page_id, body=sample("howto_vpn_setup") + "<p>More.</p>")
    confluence.fail_next(20, status=500, path_contains=f"/pages/{page_id}?")
    outcome = await sync(services)
    [failure] = outcome.report.failures
    assert failure.url.startswith(confluence.base_url) and page_id in failure.url


async def test_a_page_under_a_restricted_parent_stays_out(confluence, services) -> None:
    add_samples(confluence)
    confluence.add_page("ENG", "Management", "<p>Leadership notes.</p>", restricted=True)
    child = confluence.add_page("ENG", "Reorg plan", "<p>The platform team merges into infra in Q3.</p>",
                                parent_title="Management")
    outcome = await sync(services)
    assert outcome.report.pages_skipped == 2
    assert await chunk_texts(services, child) == []
    answer = await services.engine.answer("When does the platform team merge into infra?")
    assert child not in {s.page_id for s in answer.sources + answer.closest}


async def test_a_new_embedding_model_re_embeds_every_page_at_the_next_sync_and_says_so(
    make_settings, confluence, services,  # type: ignore[no-untyped-def]
) -> None:
    add_samples(confluence)
    first = await services.sync.run(spaces=["ENG"], trigger="cli")
    assert first.status == "succeeded" and first.report.chunks_embedded > 0
    changed = make_settings(embedding_model="emulator-embedding-v2")
    # Answering with another model's vectors would mix two vector spaces: a plain start refuses.
    with pytest.raises(EmbeddingModelMismatch):
        async with build_services(changed):
            pass
    async with build_services(changed, reembed_on_model_change=True) as rebuilt:
        async with rebuilt.database.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM chunks") == 0
            assert await conn.fetchval("SELECT model FROM embedding_config") == "emulator-embedding-v2"
        outcome = await rebuilt.sync.run(spaces=["ENG"], trigger="cli")
        assert outcome.status == "succeeded"
        assert outcome.report.chunks_embedded == first.report.chunks_embedded
        assert any("re-embedding" in w and "emulator-embedding-v2" in w for w in outcome.report.warnings)
        answer = await rebuilt.engine.answer("When is the staging database rebuilt?")
        assert not answer.refused and answer.sources
        again = await rebuilt.sync.run(spaces=["ENG"], trigger="cli")
        assert again.report.chunks_embedded == 0 and not any("re-embedding" in w for w in again.report.warnings)
