"""Bad input gets a clear outcome, never a crash: odd questions, odd pages, odd titles and space keys.

Pages are synced through the real client, converter, chunker, embedder (the OpenAI emulator) and database;
questions go through the real answer engine. SQL must stay parameterised: quotes, backslashes, `%` and `_`
in questions, titles and space filters are data, never syntax.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.answering.models import MAX_QUESTION_CHARS, QuestionError
from bot.answering.prompts import REFUSAL
from bot.operations.sync_runner import RunOutcome
from bot.services import Services, build_services
from bot.settings import load_settings
from db.embedded import EmbeddedPostgres
from ingest.chunker import chunk_sections
from ingest.models import Page
from ingest.storage_format import content_checksum, to_sections
from ingest.sync import SyncOptions, page_checksum
from ingest.tokens import CharacterBoundTokenizer, TiktokenTokenizer
from tests.conftest import EMULATOR_EMBEDDING_MODEL, TEMPLATE_DB
from tests.emulators.confluence import ConfluenceEmulator
from tests.emulators.openai import OpenAIEmulator

# A space key no real Confluence allows, to prove the key is data everywhere (URL, SQL, filters).
ODD_SPACE = "EN'G\"\\"

SYMBOL_TITLES = [
    '<script>alert("owned")</script> Release notes',
    "Quotes \"double\" and 'single' and back\\slash\\\\",
    "100% done_with_underscores and %_wildcards_%",
    "🚀 Launch checklist 🎉",
    "'; DROP TABLE pages; --",
]


PROSE = (
    "Services in this part follow the standard deploy train: changes merge to main, the pipeline builds an "
    "image, canaries take five percent of traffic for thirty minutes, and the rollout continues only when "
    "error rates stay under the budget below. Rollbacks are one click in the deploy dashboard and need no "
    "approval during an incident. "
)


def big_page(min_bytes: int = 2_000_000) -> tuple[str, int]:
    """A realistic 2 MB page: a thousand sections of prose, a table and a list. Returns (body, sections)."""
    parts: list[str] = []
    size = n = 0
    while size < min_bytes:
        rows = "".join(
            f"<tr><td>svc-{n}-{r}</td><td>{r * 7 % 13} ms</td><td>Team {r % 9} &amp; on-call</td></tr>"
            for r in range(4)
        )
        part = (
            f"<h2>Part {n}: service catalogue</h2>"
            f"<p>This part lists services {n * 4} to {n * 4 + 3}. The escalation code for part {n} is "
            f"ESC-{n:04d}-{(n * 7919) % 10007}. {PROSE * 3}</p><p>{PROSE}</p>"
            f"<table><tbody><tr><th>Service</th><th>p99</th><th>Owner</th></tr>{rows}</tbody></table>"
            f"<ul><li>Runbook step one for part {n}</li><li>Check the dashboards</li></ul>"
        )
        parts.append(part)
        size += len(part)
        n += 1
    return "".join(parts), n


NESTED = (
    "<div>" * 400 + "<p>Deep treasure sentence about parking permits.</p>" + "</div>" * 400
    + "<ul><li>" * 400 + "Deepest list item about bicycle storage" + "</li></ul>" * 400
)
MALFORMED = (
    "<p>Unclosed paragraph about R&D budgets and AT&T contracts <b>bold <i>italic</p><p>Next & last"
    "<table><tr><td>cell one<td>cell two</table>"
    '<ac:structured-macro ac:name="code"><ac:plain-text-body><![CDATA[print("broken cdata")'
    "</ac:structured-macro><p>After the broken CDATA the text goes on about expense reports.</p>"
    "<p>A stray <|endoftext|> marker and &bogus; entity &#xZZ; and &#99999999;</p><div><span>never closed"
)
UNKNOWN_MACROS = (
    '<ac:structured-macro ac:name="mystery-widget" ac:schema-version="1">'
    '<ac:parameter ac:name="mode">secret-param</ac:parameter><ac:rich-text-body>'
    "<p>Text inside an unknown macro stays visible: lunch is at noon.</p></ac:rich-text-body>"
    '</ac:structured-macro><ac:structured-macro ac:name="another-unknown"/>'
    '<ac:structured-macro ac:name="vendor:thing"><ac:plain-text-body><![CDATA[vendor payload text]]>'
    "</ac:plain-text-body></ac:structured-macro><p>Plain text after the macros.</p>"
)
IMAGE_ONLY = (
    '<p><ac:image ac:height="400"><ri:attachment ri:filename="office-network-berlin-2024.png" /></ac:image></p>'
    '<ac:image><ri:url ri:value="https://static.example.net/diagrams/wan-overview.png" /></ac:image>'
)
# One paragraph without a space in 300 kB (a pasted key or minified file): only character cuts can split it.
BLOB = "<p>Signing key: " + "QUJDRGVmZ2hpams0NTY3ODkw+/" * 12_000 + "</p>"


@dataclass(frozen=True)
class OddSpace:
    ids: dict[str, str]
    outcome: RunOutcome
    services: Services


@pytest.fixture(scope="module")
async def odd_space(pg_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[OddSpace]:
    """Every odd page in one space with an odd key, synced once for the whole module (the 2 MB page is
    the slow part); a normal space beside it. Same emulators and settings as the conftest fixtures."""
    name = f"bad_input_{os.getpid()}"
    admin = await asyncpg.connect(pg_server.admin_dsn())
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    finally:
        await admin.close()
    base, _, query = pg_server.admin_dsn().partition("?")
    dsn = f"{base.rsplit('/', 1)[0]}/{name}?{query}"
    async with ConfluenceEmulator(email="bot@example.com", api_token="confluence-secret-token") as confluence, \
            OpenAIEmulator(api_key="sk-test-secret-key", embedding_dimension=384) as openai_emulator:
        settings = load_settings(
            None, database_url=dsn, askdocs_data_dir=tmp_path_factory.mktemp("odd") / "data",
            confluence_base_url=confluence.base_url, confluence_email="bot@example.com",
            confluence_api_token="confluence-secret-token", confluence_spaces=[ODD_SPACE, "ENG"],
            openai_api_key="sk-test-secret-key", openai_base_url=openai_emulator.base_url,
            embedding_provider="openai", embedding_model=EMULATOR_EMBEDDING_MODEL, llm_provider="none",
        )
        confluence.add_space(ODD_SPACE, "Odd space")
        body, _ = big_page()
        ids = {
            "empty": confluence.add_page(ODD_SPACE, "Empty page", ""),
            "whitespace": confluence.add_page(ODD_SPACE, "Blank page", "<p> </p><p>&nbsp;</p><div>\n</div>"),
            "image": confluence.add_page(ODD_SPACE, "Network diagrams", IMAGE_ONLY),
            "big": confluence.add_page(ODD_SPACE, "Service catalogue", body),
            "nested": confluence.add_page(ODD_SPACE, "Nested layout", NESTED),
            "malformed": confluence.add_page(ODD_SPACE, "Legacy import", MALFORMED),
            "macros": confluence.add_page(ODD_SPACE, "Vendor macros", UNKNOWN_MACROS),
            "blob": confluence.add_page(ODD_SPACE, "Signing keys", BLOB),
        }
        for n, title in enumerate(SYMBOL_TITLES):
            ids[f"title{n}"] = confluence.add_page(
                ODD_SPACE, title, f"<p>Symbol page {n} explains the quarterly budget review.</p>"
            )
        confluence.add_page("ENG", "Escalation codes", "<p>The escalation code for part 777 is WRONG-SPACE.</p>")
        async with build_services(settings) as services:
            outcome = await services.sync.run(spaces=[ODD_SPACE, "ENG"], trigger="cli", requested_by="test")
            assert isinstance(outcome, RunOutcome)
            yield OddSpace(ids, outcome, services)


async def chunks_of(services: Services, page_id: str) -> list[asyncpg.Record]:
    async with services.database.pool.acquire() as conn:
        return list(await conn.fetch(
            "SELECT chunk_index, content, token_count FROM chunks WHERE page_id = $1 ORDER BY chunk_index",
            page_id,
        ))


# ---- pages -----------------------------------------------------------------------------------------------


async def test_every_odd_page_is_indexed_and_the_run_succeeds(odd_space: OddSpace) -> None:
    ids, outcome, services = odd_space.ids, odd_space.outcome, odd_space.services
    assert outcome.status == "succeeded", outcome.report.failures
    assert outcome.report.failures == [] and outcome.failed_spaces == {}
    assert outcome.report.pages_added == len(ids) + 1
    async with services.database.pool.acquire() as conn:
        rows = {r["page_id"]: r for r in await conn.fetch("SELECT page_id, space_key, title FROM pages")}
        runs = await conn.fetchval("SELECT spaces FROM sync_runs WHERE id = $1", outcome.run_id)
    assert set(ids.values()) <= set(rows) and runs == [ODD_SPACE, "ENG"]
    assert all(rows[p]["space_key"] == ODD_SPACE for p in ids.values())

    # Empty pages are rows without chunks: known (not fetched again), never searchable, not a failure.
    assert await chunks_of(services, ids["empty"]) == [] and await chunks_of(services, ids["whitespace"]) == []
    image = "\n".join(c["content"] for c in await chunks_of(services, ids["image"]))
    assert "office-network-berlin-2024.png" in image and "wan-overview.png" in image

    def text_of(records: list[asyncpg.Record]) -> str:
        return "\n".join(r["content"] for r in records)

    nested = text_of(await chunks_of(services, ids["nested"]))
    assert "Deep treasure sentence about parking permits." in nested
    assert "Deepest list item about bicycle storage" in nested
    malformed = text_of(await chunks_of(services, ids["malformed"]))
    for kept in ("R&D budgets and AT&T contracts", "cell one", 'print("broken cdata")',
                 "After the broken CDATA the text goes on", "never closed"):
        assert kept in malformed
    assert "<p>" not in malformed and "<![CDATA[" not in malformed
    macros = text_of(await chunks_of(services, ids["macros"]))
    assert "lunch is at noon" in macros and "Plain text after the macros." in macros
    assert "secret-param" not in macros  # macro parameters are settings, not page text

    big = await chunks_of(services, ids["big"])
    _, parts = big_page()
    assert len(big) > 100
    assert sum(f"The escalation code for part {n} is" in text_of(big) for n in (0, parts // 2, parts - 1)) == 3
    blob = await chunks_of(services, ids["blob"])
    assert len(blob) > 1  # split by characters, not truncated by the model
    assert "".join(c["content"] for c in blob).count("QUJDRGVmZ2hpams0NTY3ODkw") >= 12_000


async def test_every_chunk_fits_the_embedding_model(odd_space: OddSpace) -> None:
    services = odd_space.services
    async with services.database.pool.acquire() as conn:
        chunks = await conn.fetch("SELECT page_id, chunk_index, content, token_count FROM chunks")
    budget = min(services.embedder.max_input_tokens, SyncOptions().max_chunk_tokens)
    tokenizer = services.embedder.tokenizer
    assert chunks
    by_page: dict[str, list[int]] = {}
    for c in chunks:
        assert 0 < c["token_count"] <= budget, (c["page_id"], c["chunk_index"])
        assert tokenizer.count(c["content"]) <= budget
        by_page.setdefault(c["page_id"], []).append(c["chunk_index"])
    assert all(sorted(indices) == list(range(len(indices))) for indices in by_page.values())
    # The blob's chunks go right up to the budget: this is where a too-big chunk would show.
    blob = max(c["token_count"] for c in chunks if c["page_id"] == odd_space.ids["blob"])
    assert blob > budget // 2


async def test_symbol_titles_are_stored_and_found_verbatim(odd_space: OddSpace) -> None:
    ids, services = odd_space.ids, odd_space.services
    async with services.database.pool.acquire() as conn:
        titles = {r["page_id"]: r["title"] for r in await conn.fetch("SELECT page_id, title FROM pages")}
        assert await conn.fetchval("SELECT to_regclass('pages') IS NOT NULL")
    for n, title in enumerate(SYMBOL_TITLES):
        assert titles[ids[f"title{n}"]] == title
    answer = await services.engine.answer("quarterly budget review symbol page", spaces=[ODD_SPACE])
    assert not answer.refused
    assert {s.title for s in answer.sources} <= set(SYMBOL_TITLES) and answer.sources


async def test_a_fact_deep_in_the_2mb_page_is_answered_from_the_right_space(odd_space: OddSpace) -> None:
    ids, services = odd_space.ids, odd_space.services
    answer = await services.engine.answer("What is the escalation code for part 777?", spaces=[ODD_SPACE])
    assert not answer.refused and answer.sources[0].page_id == ids["big"]
    assert f"ESC-0777-{(777 * 7919) % 10007}" in answer.text
    assert all(s.space_key == ODD_SPACE for s in answer.sources)
    assert "WRONG-SPACE" not in answer.text


async def test_space_filters_with_quotes_and_backslashes_are_data(odd_space: OddSpace) -> None:
    services = odd_space.services
    question = "What is the escalation code for part 777?"
    for spaces in (["EN'G\\"], ["ENG'--"], ["%"], ["_"], ["ENG\\", "' OR '1'='1"]):
        answer = await services.engine.answer(question, spaces=spaces)
        assert answer.refused and answer.sources == [] and answer.closest == [], spaces
    unfiltered = await services.engine.answer(question)
    assert {s.space_key for s in unfiltered.sources} <= {ODD_SPACE, "ENG"} and unfiltered.sources


# ---- questions -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("question", ["", "   ", "\n\t \u3000 \n"])
async def test_an_empty_question_gets_a_helpful_message(services: Services, question: str) -> None:
    with pytest.raises(QuestionError) as raised:
        await services.engine.answer(question)
    assert "Please ask a question" in str(raised.value) and "@askdocs" in str(raised.value)


async def test_odd_questions_are_answered_or_refused_and_logged(
    confluence: ConfluenceEmulator, services: Services
) -> None:
    confluence.add_page("ENG", "VPN access", "<p>To request VPN access, open a ticket in the IT portal.</p>")
    synced = await services.sync.run(spaces=["ENG"], trigger="cli")
    assert isinstance(synced, RunOutcome) and synced.status == "succeeded"
    questions = {
        "long": "How do I request VPN access? " + "I need VPN access from the IT portal for my laptop. " * 200,
        "emoji": "🚀🔥🤖🙈",
        "cjk": "如何申请VPN访问权限？请告诉我步骤。",
        "rtl": "كيف أطلب VPN access? איך מבקשים גישה",
        "sql": "How do I request \"VPN access\" for O'Brien's laptop \\ 100% _now_? '; DROP TABLE pages; -- $1",
        "tsquery": "VPN & | ! <-> access:* ( ) \" '",
    }
    assert len(questions["long"]) > 10_000
    answers = {}
    for name, question in questions.items():
        answers[name] = answer = await services.engine.answer(question)
        assert answer.text and answer.query_id is not None, name
        assert answer.refused == (answer.text == REFUSAL), name
    long = answers["long"]
    assert long.truncated and len(long.question) <= MAX_QUESTION_CHARS
    assert not long.refused and long.sources[0].title == "VPN access"
    for name in ("sql", "tsquery"):  # quotes, backslashes and tsquery operators are just words to search
        found = answers[name].sources or answers[name].closest
        assert found and found[0].title == "VPN access", name
    assert answers["emoji"].refused  # nothing to go on: a refusal, not an error
    async with services.database.pool.acquire() as conn:
        logged = [r["question"] for r in await conn.fetch("SELECT question FROM query_log ORDER BY id")]
        assert await conn.fetchval("SELECT count(*) FROM pages") == 1
    assert logged == [answers[name].question for name in questions]
    assert logged[-2] == " ".join(questions["sql"].split())  # stored verbatim, quotes and backslashes too


# ---- the pure half of index_page, end to end ---------------------------------------------------------------

_MARKUP = st.sampled_from([
    "<p>", "</p>", "<h1>", "</h1>", "<h3>", "</h3>", "<ul><li>", "</li></ul>", "<table><tr><td>", "</td></tr>",
    '<ac:structured-macro ac:name="code"><ac:plain-text-body><![CDATA[', "]]></ac:plain-text-body>",
    '<ac:structured-macro ac:name="zzz-unknown"><ac:rich-text-body>', "</ac:rich-text-body>",
    "</ac:structured-macro>", "<div>" * 50, "&", "&amp;", "<", "<![CDATA[", "<br/>",
])
_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
_TOKENIZER = CharacterBoundTokenizer(TiktokenTokenizer())


@settings(deadline=None, max_examples=60)
@given(st.lists(st.one_of(_MARKUP, _TEXT), max_size=30), _TEXT, st.lists(_TEXT, max_size=3),
       st.integers(min_value=32, max_value=120))
def test_any_body_and_title_make_well_formed_chunks_and_a_stable_checksum(
    parts: list[str], title: str, ancestors: list[str], max_tokens: int
) -> None:
    page = Page(page_id="1", space_key=ODD_SPACE, title=title, version=1, url="", body="".join(parts),
                ancestors=tuple(ancestors))

    def index() -> tuple[str, list[tuple[str, str, int]]]:
        sections = to_sections(page.body, title=page.title)
        chunks = chunk_sections(sections, title=page.title, breadcrumb=page.breadcrumb, tokenizer=_TOKENIZER,
                                max_tokens=max_tokens, overlap_tokens=8)
        assert [c.index for c in chunks] == list(range(len(chunks)))
        for c in chunks:
            assert _TOKENIZER.count(c.embed_text) <= max_tokens
            assert c.embed_text.endswith(c.content) and c.content.strip()
            assert c.content_hash == hashlib.sha256(c.embed_text.encode("utf-8", "surrogatepass")).hexdigest()
            assert "\x00" not in c.embed_text  # Postgres text can't hold NUL
        if not any(s.text.strip() for s in sections):
            assert chunks == []
        return page_checksum(page, content_checksum(sections)), [(c.content_hash, c.content, c.token_count)
                                                                 for c in chunks]

    first = index()
    assert re.fullmatch(r"[0-9a-f]{64}", first[0])
    assert index() == first  # the same page always indexes the same way: re-syncs reuse, never churn
