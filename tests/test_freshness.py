"""Answer-time freshness: stale citations are flagged and refreshed, vanished pages leave the answer."""

from __future__ import annotations

import asyncio

from tests.wiki import add_samples, sample


async def test_a_cited_page_edited_after_indexing_is_flagged_and_refreshed(services, confluence) -> None:
    ids = add_samples(confluence)
    await services.sync.run(spaces=["ENG"], trigger="cli")
    question = "When is the staging database rebuilt?"
    answer = await services.engine.answer(question)
    assert services.freshness is not None
    cited = answer.sources[0]
    confluence.edit_page(cited.page_id, body=confluence.pages[cited.page_id].body.replace(
        "every Sunday at 02:00 UTC", "every Saturday at 23:00 UTC"))

    reviewed = await services.freshness.review(answer)
    assert [s.page_id for s in reviewed.report.stale] == [cited.page_id]
    assert reviewed.answer.note and f"[{cited.n}] {cited.title}" in reviewed.answer.note
    assert reviewed.refresh is not None
    assert await asyncio.wait_for(reviewed.refresh, 10) == [cited.page_id]

    again = await services.engine.answer(question)
    assert "Saturday at 23:00 UTC" in again.text
    assert (await services.freshness.review(again)).report.stale == []
    assert ids  # the space is still there


async def test_a_deleted_cited_page_leaves_the_answer_and_the_index(services, confluence) -> None:
    add_samples(confluence)
    await services.sync.run(spaces=["ENG"], trigger="cli")
    answer = await services.engine.answer("How many days of paid annual leave do employees get?")
    victim = answer.sources[0]
    confluence.delete_page(victim.page_id)
    assert services.freshness is not None
    reviewed = await services.freshness.review(answer)
    assert [s.page_id for s in reviewed.report.vanished] == [victim.page_id]
    assert victim.page_id not in {s.page_id for s in reviewed.answer.sources}
    async with services.database.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM pages WHERE page_id = $1", victim.page_id) == 0


async def test_an_unreachable_confluence_never_holds_up_the_answer(services, confluence) -> None:
    add_samples(confluence)
    await services.sync.run(spaces=["ENG"], trigger="cli")
    answer = await services.engine.answer("When is the staging database rebuilt?")
    confluence.slow_next(10.0, n=5)
    assert services.freshness is not None
    reviewed = await services.freshness.review(answer)
    assert not reviewed.report.checked and reviewed.answer == answer
    assert sample("staging_environment")


async def test_a_page_merely_missing_from_a_version_check_is_not_deleted(services, confluence) -> None:
    add_samples(confluence)
    await services.sync.run(spaces=["ENG"], trigger="cli")
    answer = await services.engine.answer("When is the staging database rebuilt?")
    assert services.freshness is not None
    # The batched check leaves the page out (as a rebuilding search index does), but the page is there.
    confluence.fail_next(1, status=503, path_contains="/api/v2/pages?id")
    cited = answer.sources[0]
    versions = await services.freshness.current_versions([cited.page_id])
    reviewed = await services.freshness.review(answer) if versions is not None else None
    assert reviewed is None or reviewed.report.vanished == []
    assert await services.freshness.confirm_gone([cited.page_id]) == set()
    async with services.database.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM pages WHERE page_id = $1", cited.page_id) == 1


async def test_the_api_and_cli_path_answers_again_after_refreshing_a_stale_page(services, confluence) -> None:
    add_samples(confluence)
    await services.sync.run(spaces=["ENG"], trigger="cli")
    question = "When is the staging database rebuilt?"
    answer = await services.engine.answer(question)
    cited = answer.sources[0]
    confluence.edit_page(cited.page_id, body=confluence.pages[cited.page_id].body.replace(
        "every Sunday at 02:00 UTC", "every Friday at 20:00 UTC"))
    assert services.freshness is not None
    fresh = await services.freshness.fresh_answer(answer, lambda: services.engine.answer(question))
    assert "Friday at 20:00 UTC" in fresh.text  # the edited page, re-indexed and quoted
