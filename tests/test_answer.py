"""Retrieval and answers through the real engine: hybrid search, citations, refusals, both modes."""

from __future__ import annotations

import numpy as np
import pytest

from bot.answering.models import MAX_QUESTION_CHARS, AskContext, QuestionError, Turn
from bot.answering.prompts import REFUSAL
from bot.services import build_services
from db import search
from tests.wiki import add_samples


@pytest.fixture
async def llm_services(make_settings):  # type: ignore[no-untyped-def]
    async with build_services(make_settings(llm_provider="openai")) as built:
        yield built


async def synced(services, confluence) -> dict[str, str]:  # type: ignore[no-untyped-def]
    ids = add_samples(confluence)
    confluence.add_space("HR", "People")
    confluence.add_page("HR", "Parental Leave", "<p>Parents get 20 weeks of paid parental leave.</p>")
    outcome = await services.sync.run(spaces=["ENG", "HR"], trigger="cli")
    assert outcome.status == "succeeded"
    return ids


async def test_llm_answer_cites_the_right_page(llm_services, confluence, openai_emulator) -> None:
    ids = await synced(llm_services, confluence)
    deltas: list[str] = []

    async def on_delta(text: str) -> None:
        deltas.append(text)

    answer = await llm_services.engine.answer("When is the staging database rebuilt?", on_delta=on_delta)
    assert not answer.refused and answer.mode == "llm"
    assert "Sunday at 02:00 UTC" in answer.text and "[1]" in answer.text
    assert len(deltas) > 1 and deltas[-1].startswith(answer.text.split("[")[0][:20])
    cited = {s.page_id for s in answer.sources}
    assert cited <= {ids["Staging Environment"], ids["Architecture Order Service"]}
    assert [s.n for s in answer.sources] == list(range(1, len(answer.sources) + 1))
    assert all(s.url.startswith(confluence.base_url) for s in answer.sources)
    # The prompt fenced page text as untrusted sources and carried the question.
    prompt = "\n".join(m["content"] for m in openai_emulator.chat_messages())
    assert '<source n="1"' in prompt and "Question: When is the staging database rebuilt?" in prompt


async def test_uncited_sources_are_dropped_and_citations_renumbered(llm_services, confluence,
                                                                    openai_emulator) -> None:
    await synced(llm_services, confluence)
    openai_emulator.script_reply("Full-time employees get 28 days of paid leave [3]. Carry over 5 days [3][9].")
    answer = await llm_services.engine.answer("How many days of annual leave do I get?")
    assert answer.text == "Full-time employees get 28 days of paid leave [1]. Carry over 5 days [1]."
    assert len(answer.sources) == 1


async def test_refuses_honestly_and_lists_closest_pages(llm_services, confluence) -> None:
    await synced(llm_services, confluence)
    answer = await llm_services.engine.answer("What is the recipe for sourdough bread with rye flour?")
    assert answer.refused and answer.text == REFUSAL and answer.sources == []


@pytest.mark.parametrize("question", [
    "How do I rebuild the staging database with Terraform?",
    "Which PgBouncer pool_mode does the staging database use?",
])
async def test_questions_about_a_product_the_wiki_never_mentions_are_refused(services, confluence,
                                                                               question: str) -> None:
    await synced(services, confluence)
    answer = await services.engine.answer(question)
    assert answer.refused and answer.text == REFUSAL and answer.sources == []
    # The same question without the unknown product is answered from the staging page.
    plain = await services.engine.answer("How do I rebuild the staging database?")
    assert not plain.refused and any(s.title == "Staging Environment" for s in plain.sources)


async def test_model_refusal_is_respected(llm_services, confluence, openai_emulator) -> None:
    await synced(llm_services, confluence)
    openai_emulator.script_reply(REFUSAL)
    answer = await llm_services.engine.answer("When is the staging database rebuilt?")
    assert answer.refused and answer.closest and not answer.sources


async def test_a_partly_refusing_model_answer_keeps_its_cited_part(llm_services, confluence,
                                                                   openai_emulator) -> None:
    await synced(llm_services, confluence)
    openai_emulator.script_reply("Staging is rebuilt every Sunday at 02:00 UTC [1]. "
                                 "I couldn't find that in Confluence for production.")
    answer = await llm_services.engine.answer("When are staging and production rebuilt?")
    assert not answer.refused and answer.text.startswith("Staging is rebuilt every Sunday")
    assert len(answer.sources) == 1


async def test_extractive_mode_quotes_real_page_text(services, confluence) -> None:
    ids = await synced(services, confluence)
    answer = await services.engine.answer("How many days of paid annual leave do full-time employees get?")
    assert not answer.refused and answer.mode == "extractive"
    lines = answer.text.splitlines()[1:]
    assert any("28 days" in line for line in lines)
    assert ids["Hr Leave Policy"] in {s.page_id for s in answer.sources}
    async with services.database.pool.acquire() as conn:
        for line in lines:
            quote, _, n = line.removeprefix("• ").rpartition(" [")
            source = answer.sources[int(n.rstrip("]")) - 1]
            page_text = " ".join(r["content"] for r in await conn.fetch(
                "SELECT content FROM chunks WHERE page_id = $1", source.page_id))
            assert quote.rstrip("…") in page_text  # quoted verbatim from the page it cites


async def test_space_filter_holds(services, confluence) -> None:
    await synced(services, confluence)
    hr_only = await services.engine.answer("How long is paid parental leave?", spaces=["HR"])
    assert {s.space_key for s in hr_only.sources} == {"HR"}
    eng_only = await services.engine.answer("How long is paid parental leave?", spaces=["ENG"])
    assert all(s.space_key == "ENG" for s in eng_only.sources + eng_only.closest)


async def test_follow_up_is_made_standalone(llm_services, confluence) -> None:
    await synced(llm_services, confluence)
    history = [Turn("user", "When is the staging database rebuilt?"),
               Turn("assistant", "Every Sunday at 02:00 UTC [1].")]
    answer = await llm_services.engine.answer("and where does its data come from?", history=history)
    assert "staging" in answer.standalone_question.lower()


def test_follow_up_rule_without_a_model() -> None:
    from bot.answering.prompts import standalone_question

    history = [Turn("user", "How do I reset my VPN password?")]
    assert standalone_question("what about on a Mac?", history) == "what about on a Mac? (reset vpn password)"
    long_question = "How many days of annual leave carry over to next year?"
    assert standalone_question(long_question, history) == long_question


async def test_every_question_is_logged(services, confluence) -> None:
    await synced(services, confluence)
    answer = await services.engine.answer(
        "When is the staging database rebuilt?",
        context=AskContext(surface="slack", user_id="U1", channel_id="C1", thread_ts="1.2"),
    )
    async with services.database.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM query_log WHERE id = $1", answer.query_id)
    assert row["question"] == "When is the staging database rebuilt?" and row["user_id"] == "U1"
    assert row["answer"] == answer.text and row["latency_ms"] is not None and row["top_score"] > 0
    assert '"page_id"' in row["sources"]


@pytest.mark.parametrize("question", ["", "   \n\t "])
async def test_empty_question_is_a_clear_error(services, question: str) -> None:
    with pytest.raises(QuestionError, match="Please ask a question"):
        await services.engine.answer(question)


async def test_long_and_unusual_questions_get_an_answer_not_a_crash(services, confluence) -> None:
    await synced(services, confluence)
    long_answer = await services.engine.answer("staging database " * 700)
    assert long_answer.truncated and len(long_answer.question) <= MAX_QUESTION_CHARS
    for odd in ["🚀🔥 staging?", "ステージングのデータベースはいつ再構築されますか", "'; DROP TABLE pages; --",
                "back\\slash \"quotes\" in:ENG"]:
        answer = await services.engine.answer(odd)
        assert answer.text
    async with services.database.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM pages") > 0


async def test_vector_search_uses_the_hnsw_index(services, confluence) -> None:
    await synced(services, confluence)
    async with services.database.pool.acquire() as conn:
        # Few rows make a sequential scan cheaper; the plan must still be able to use the index.
        await conn.execute("SET enable_seqscan = off")
        plan = await search.explain_vector_leg(conn, np.ones(384, dtype=np.float32))
        await conn.execute("RESET enable_seqscan")
    assert "chunks_embedding_hnsw_idx" in plan


async def test_keyword_leg_keeps_only_distinctive_words(services, confluence) -> None:
    from tests.wiki import add_team_pages

    add_team_pages(confluence, "ENG", 240)  # every page says "maintained by the … team"
    await services.sync.run(spaces=["ENG"], trigger="cli")
    [embedding] = await services.embedder.embed(["team wireguard"])
    async with services.database.pool.acquire() as conn:
        team_chunks = await conn.fetchval("SELECT ndoc FROM lexeme_stats WHERE lexeme = 'team'")
        assert team_chunks >= 240  # too common to rank every match
        candidates = await search.hybrid_candidates(conn, embedding, "team or wireguard", limit=40)
    keyword_hits = [c for c in candidates if c.keyword_rank is not None]
    assert keyword_hits and all("wireguard" in c.content.lower() for c in keyword_hits)


async def test_with_query_rewriting_the_model_writes_a_passage_to_search_with(make_settings, confluence,
                                                                              openai_emulator) -> None:
    async with build_services(make_settings(llm_provider="openai", llm_query_rewrite=True)) as rewriting:
        await synced(rewriting, confluence)
        answer = await rewriting.engine.answer("When is the staging database rebuilt?")
        assert not answer.refused and any(s.title == "Staging Environment" for s in answer.sources)
        prompts_seen = [" ".join(" ".join(m["content"] for m in openai_emulator.chat_messages(i)).split())
                        for i in (-2, -1)]
        assert "only used to search the wiki" in prompts_seen[0] and "<source" in prompts_seen[1]
        # The subject check reads the question, not the model's passage.
        refused = await rewriting.engine.answer("How do I rebuild the staging database with Terraform?")
        assert refused.refused
