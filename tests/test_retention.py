"""QUERY_LOG_RETENTION_DAYS: questions, answers and feedback older than the retention leave the database."""

from __future__ import annotations

from bot.operations.retention import prune_claims, prune_query_log
from bot.operations.scheduler import SyncScheduler
from bot.services import Services
from db import activity, claims
from db.activity import QueryLogEntry


async def ask_and_vote(services: Services, question: str, *, days_ago: int) -> int:
    """A logged question with a 👍, as if asked `days_ago` days ago."""
    async with services.database.pool.acquire() as conn:
        query_id = await activity.log_query(conn, QueryLogEntry(
            surface="slack", question=question, answer="an answer", refused=False, sources=[], user_id="U1"))
        await activity.record_feedback(conn, query_id=query_id, user_id="U2", value=1)
        await conn.execute("UPDATE query_log SET asked_at = now() - make_interval(days => $2) WHERE id = $1",
                           query_id, days_ago)
    return query_id


async def logged(services: Services) -> tuple[set[str], int]:
    async with services.database.pool.acquire() as conn:
        questions = {r["question"] for r in await conn.fetch("SELECT question FROM query_log")}
        feedback = int(await conn.fetchval("SELECT count(*) FROM feedback"))
    return questions, feedback


async def test_questions_and_feedback_past_the_retention_are_deleted(services: Services) -> None:
    assert services.settings.query_log_retention_days == 180  # the default
    await ask_and_vote(services, "old question", days_ago=200)
    await ask_and_vote(services, "older question", days_ago=400)
    await ask_and_vote(services, "recent question", days_ago=10)
    assert await prune_query_log(services.database.pool, retention_days=0) == (0, 0)  # 0: keep forever
    assert await prune_query_log(services.database.pool, retention_days=180) == (2, 2)
    assert await logged(services) == ({"recent question"}, 1)
    assert await prune_query_log(services.database.pool, retention_days=180) == (0, 0)


async def test_retention_runs_daily_on_the_scheduler(services: Services) -> None:
    await ask_and_vote(services, "old question", days_ago=200)
    scheduler = SyncScheduler(services.sync, services.database.pool, spaces=["ENG"], interval_hours=24)
    scheduler.add_daily(lambda: prune_query_log(services.database.pool, retention_days=180),
                        name="query log retention")
    job = scheduler._scheduler.get_job("query log retention")
    assert job is not None and job.coalesce and "hour='3'" in str(job.trigger)
    assert "day_of_week" not in str(job.trigger)
    await job.func()
    assert await logged(services) == (set(), 0)


async def test_replica_claims_are_forgotten_after_two_weeks(services) -> None:  # type: ignore[no-untyped-def]
    pool = services.database.pool
    async with pool.acquire() as conn:
        assert await claims.claim_once(conn, "slack message C1:1.0")
        assert await claims.claim_once(conn, "slack message C1:2.0")
        await conn.execute("UPDATE claims SET claimed_at = now() - interval '15 days' WHERE claim LIKE '%1.0'")
    assert await prune_claims(pool) == 1
    async with pool.acquire() as conn:
        assert await claims.claim_once(conn, "slack message C1:1.0")  # claimable again: long forgotten
        assert not await claims.claim_once(conn, "slack message C1:2.0")
