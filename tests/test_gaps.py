"""Knowledge gaps: refused, 👎 and weakly supported questions grouped by topic, in the CLI and the digest."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.answering.models import AskContext
from bot.cli.commands import print_gaps
from bot.operations.gaps import (
    GapGroup,
    GapReasons,
    cluster,
    collect_gaps,
    distinct_questions,
    redact_identities,
)
from bot.slack.digest import DIGEST_TITLE, gaps_digest_blocks, post_gaps_digest
from db import activity
from db.gaps import UnansweredQuestion
from tests.emulators.slack import SlackEmulator, block_errors
from tests.wiki import add_samples

# The emulator's embeddings are a bag of words: paraphrases must share words to meet (MiniLM needn't).
TAXI = ["How do I expense a taxi?", "How do I claim a taxi expense?", "Can I expense taxi rides?",
        "how do i expense a taxi"]
PARKING = ["Is there parking at the office?", "parking at the office", "office parking for visitors"]
ANSWERED = "How many days of paid annual leave do full-time employees get?"
ASKERS = ("U0TAXI01", "U0PARK02", "U0FEED03")


async def ask_gap_questions(services, confluence) -> None:  # type: ignore[no-untyped-def]
    add_samples(confluence)
    assert (await services.sync.run(spaces=["ENG"], trigger="cli")).status == "succeeded"
    for question in TAXI:
        answer = await services.engine.answer(question, context=AskContext("slack", ASKERS[0], "C0SECRET"))
        assert answer.refused, question
    for question in PARKING:
        answer = await services.engine.answer(question, context=AskContext("slack", ASKERS[1], "C0SECRET"))
        assert answer.refused, question
    answered = await services.engine.answer(ANSWERED, context=AskContext("slack", ASKERS[2], "C0SECRET"))
    assert not answered.refused and answered.query_id is not None
    # Golden questions refuse on purpose: not a gap.
    await services.engine.answer(TAXI[1], context=AskContext("eval"))
    async with services.database.pool.acquire() as conn:
        await activity.record_feedback(conn, query_id=answered.query_id, user_id=ASKERS[2], value=-1)


async def test_refused_and_thumbs_down_questions_group_by_topic(services, confluence) -> None:  # type: ignore[no-untyped-def]
    await ask_gap_questions(services, confluence)
    # weak_below=0: only refusals and 👎 count, whatever the emulator's similarity for the leave question.
    groups = await collect_gaps(services.database.pool, services.embedder, days=7, limit=10, weak_below=0.0)

    assert [(g.count, g.distinct) for g in groups] == [(4, 3), (3, 3), (1, 1)]
    taxi, parking, leave = groups
    assert taxi.label in TAXI and set(taxi.examples) <= set(TAXI) and len(set(taxi.examples)) == 3
    assert taxi.reasons == GapReasons(refused=4)
    assert set(parking.examples) == set(PARKING) and parking.reasons == GapReasons(refused=3)
    assert leave.examples == (ANSWERED,) and leave.reasons == GapReasons(thumbs_down=1)
    assert (await collect_gaps(services.database.pool, services.embedder, days=7, limit=2,
                               weak_below=0.0)) == groups[:2]

    # An answered question counts as weak evidence below the model's confident threshold.
    weak = await collect_gaps(services.database.pool, services.embedder, days=7, weak_below=1.01)
    assert weak[2].reasons == GapReasons(thumbs_down=1, weak=1)


async def test_gaps_command_prints_groups_without_identities(  # type: ignore[no-untyped-def]
    services, confluence, make_settings
) -> None:
    await ask_gap_questions(services, confluence)
    out = io.StringIO()
    assert await print_gaps(make_settings(), days=30, as_json=True, out=out) == 0
    report = json.loads(out.getvalue())
    assert report["days"] == 30 and [g["count"] for g in report["groups"]][:2] == [4, 3]
    assert {"label", "count", "examples", "reasons", "last_asked"} <= report["groups"][0].keys()
    text = io.StringIO()
    assert await print_gaps(make_settings(), days=30, as_json=False, out=text) == 0
    assert "   4×  " in text.getvalue() and "taxi" in text.getvalue()
    for output in (out.getvalue(), text.getvalue()):
        assert not any(user in output for user in (*ASKERS, "C0SECRET"))


async def test_digest_posts_escaped_blocks_and_skips_empty_weeks(  # type: ignore[no-untyped-def]
    services, confluence
) -> None:
    async with SlackEmulator() as slack:
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.base_url)
        digest = (services.database.pool, services.embedder, client, "C1")
        assert await post_gaps_digest(*digest) is False  # nothing asked yet
        assert slack.calls_of("chat.postMessage") == []

        await ask_gap_questions(services, confluence)
        assert await post_gaps_digest(*digest) is True
        [call] = slack.calls_of("chat.postMessage")
        posted = json.dumps(call.params, ensure_ascii=False)
        assert DIGEST_TITLE in posted and "4×" in posted and "taxi" in posted
        assert not any(user in posted for user in (*ASKERS, "C0SECRET"))


def test_digest_blocks_neutralise_broadcasts_and_markup() -> None:
    when = datetime(2025, 3, 3, tzinfo=UTC)
    group = GapGroup(
        label="<!channel> where do we park & why <b>?", count=2,
        examples=("<!channel> where do we park & why <b>?", "@here parking <!here|here>"),
        reasons=GapReasons(refused=2), last_asked=when, distinct=2,
    )
    message = gaps_digest_blocks([group], days=7)
    assert block_errors(message["blocks"]) == []
    assert message["blocks"][0]["text"]["text"] == DIGEST_TITLE
    text = json.dumps(message, ensure_ascii=False)
    assert "<!channel>" not in text and "<!here" not in text and "@here" not in text and "<b>" not in text
    assert "&lt;!channel&gt; where do we park &amp; why &lt;b&gt;?" in text


@pytest.mark.parametrize(("question", "shown"), [
    ("ask <@U0ABC123> about parking", "ask @someone about parking"),
    ("ask <@U0ABC123|alice> about parking", "ask @someone about parking"),
    ("did @alice.smith write the taxi page", "did @someone write the taxi page"),
    ("mail bob.jones@acme-freight.net for cabs", "mail someone@… for cabs"),
    ("<!subteam^S123|@platform> on call?", "@someone on call?"),
    ("@here who parks where", "@here who parks where"),  # not an identity; escaped in the digest
])
def test_identities_in_question_text_are_redacted(question: str, shown: str) -> None:
    assert redact_identities(question) == shown


def test_repeats_merge_and_weak_counts_only_answered_questions() -> None:
    t0 = datetime(2025, 3, 3, tzinfo=UTC)
    rows = [
        UnansweredQuestion("Taxi expenses?", t0, refused=True, top_score=0.2, thumbs_down=False),
        UnansweredQuestion("taxi  expenses", t0 + timedelta(hours=1), refused=False, top_score=0.4,
                           thumbs_down=True),
        UnansweredQuestion("parking", t0, refused=False, top_score=0.45, thumbs_down=False),
        UnansweredQuestion("vpn", t0, refused=False, top_score=0.9, thumbs_down=False),
    ]
    taxi, parking = distinct_questions(rows, weak_below=0.5)
    assert (taxi.text, taxi.asks, taxi.last_asked) == ("taxi expenses", 2, t0 + timedelta(hours=1))
    assert taxi.reasons == GapReasons(refused=1, thumbs_down=1, weak=1)
    assert parking.reasons == GapReasons(weak=1)


@pytest.mark.parametrize(("vectors", "threshold", "groups"), [
    ([[1, 0], [1, 0], [0, 1]], 0.6, [[0, 1], [2]]),
    ([[1, 0], [0.8, 0.6], [0, 1]], 0.6, [[0, 1], [2]]),  # 0.8 to the first; the third is 0.32 from the mean
    ([[1, 0], [0.8, 0.6], [0.6, 0.8]], 0.6, [[0, 1, 2]]),  # the centroid moved towards the third
    ([[1, 0], [0.5, 0.866]], 0.6, [[0], [1]]),
    ([], 0.6, []),
])
def test_greedy_clustering_joins_the_nearest_centroid(vectors: list[list[float]], threshold: float,
                                                      groups: list[list[int]]) -> None:
    assert cluster(vectors, threshold=threshold) == groups


def _topic_vectors(n: int, *, topics: int, dimension: int = 384, seed: int = 16) -> list[list[float]]:
    """Unit vectors scattered around `topics` directions, like embeddings of questions on a few subjects."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(topics, dimension))
    picked = centres[rng.integers(0, topics, size=n)] + rng.normal(scale=0.9, size=(n, dimension))
    unit = picked / np.linalg.norm(picked, axis=1, keepdims=True)
    return [list(map(float, row)) for row in unit]


def test_clustering_two_thousand_distinct_questions_takes_well_under_a_second_per_thousand() -> None:
    import time

    vectors = _topic_vectors(2000, topics=2000)  # the worst case: nearly every question its own group
    started = time.monotonic()
    groups = cluster(vectors, threshold=0.6)
    assert time.monotonic() - started < 3.0  # the pairwise Python loop took 12.7 s (issue 16)
    assert sorted(i for g in groups for i in g) == list(range(2000))


def test_vectorised_clustering_groups_as_the_pairwise_scan_did() -> None:
    import numpy as np

    def pairwise(vectors: list[list[float]], threshold: float) -> list[list[int]]:
        sums: list[np.ndarray] = []
        groups: list[list[int]] = []
        for i, raw in enumerate(vectors):
            vector = np.asarray(raw)
            best, best_similarity = -1, -2.0
            for g, total in enumerate(sums):
                norm = float(np.linalg.norm(total))
                similarity = float(total @ vector) / norm if norm else 0.0
                if similarity > best_similarity:
                    best, best_similarity = g, similarity
            if best >= 0 and best_similarity >= threshold:
                sums[best] = sums[best] + vector
                groups[best].append(i)
            else:
                sums.append(vector.copy())
                groups.append([i])
        return groups

    vectors = _topic_vectors(300, topics=12, dimension=32)
    for threshold in (0.3, 0.45, 0.6):
        assert cluster(vectors, threshold=threshold) == pairwise(vectors, threshold)
