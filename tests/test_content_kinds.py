"""Issue 14 end to end: attachments, comments, blog posts and faithful macros are answered and cited — through
the real ConfluenceClient on REST v2 (v1 content GET answering 410 Gone), the embedded Postgres, and
extractive answers."""

from __future__ import annotations

import pytest

from bot.operations.sync_runner import RunOutcome
from tests import files

DANA = "557058:0f1e2d3c-dana"
SAM = "557058:9a8b7c6d-sam"


async def sync(services) -> RunOutcome:  # type: ignore[no-untyped-def]
    outcome = await services.sync.run(spaces=["ENG"], trigger="cli", requested_by="test")
    assert isinstance(outcome, RunOutcome)
    return outcome


def build_space(confluence) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """One of each content kind, each holding a fact found nowhere else."""
    confluence.v1_content_gone = True  # as through the api.atlassian.com gateway: bodies must come from v2
    confluence.add_user(DANA, "Dana Scully")
    confluence.add_user(SAM, "Sam Carter")
    confluence.add_space("ENG", "Engineering")
    confluence.add_space("SHARED", "Shared snippets")
    ids: dict[str, str] = {}
    ids["travel"] = confluence.add_page("ENG", "Travel Policy", "<p>Book travel through the portal.</p>")
    ids["pdf"] = confluence.add_attachment(
        ids["travel"], "hotel-rules.pdf", media_type=files.PDF,
        data=files.pdf(["Hotel stays are reimbursed up to 180 euros per night in Lisbon."]),
    )
    ids["docx"] = confluence.add_attachment(
        ids["travel"], "onboarding.docx", media_type=files.DOCX,
        data=files.docx("Laptop", "Every new hire receives a ThinkPad X1 Carbon laptop on day one."),
    )
    ids["finance"] = confluence.add_page("ENG", "Finance", "<p>Budgets are set every January.</p>",
                                         parent_title="Travel Policy")
    ids["xlsx"] = confluence.add_attachment(
        ids["finance"], "budgets-2027.xlsx", media_type=files.XLSX,
        data=files.xlsx([["Team", "Annual budget"], ["Payments", "42,000 euros"], ["Search", "17,000 euros"]]),
    )
    ids["pptx"] = confluence.add_attachment(
        ids["finance"], "roadmap.pptx", media_type=files.PPTX,
        data=files.pptx("Roadmap", "The Oslo data center opens in September 2027."),
    )
    ids["corrupt"] = confluence.add_attachment(ids["finance"], "broken-scan.pdf", media_type=files.PDF,
                                               data=files.corrupt_pdf())
    ids["deploys"] = confluence.add_page("ENG", "Deploys", "<p>Deploys go through the pipeline.</p>")
    ids["footer"] = confluence.add_comment(
        ids["deploys"], "<p>Decision: production deploys are frozen on Fridays after 14:00.</p>", author_id=DANA)
    ids["inline"] = confluence.add_comment(
        ids["deploys"], "<p>Agreed: the on-call rotation handover happens every Wednesday.</p>",
        author_id=SAM, inline=True, resolved=True)
    ids["open_inline"] = confluence.add_comment(
        ids["deploys"], "<p>Maybe the handover should move to Mondays instead?</p>", inline=True)
    ids["blog"] = confluence.add_blogpost(
        "ENG", "Office move", "<p>The Berlin office moves to Torstrasse 49 on the first of March.</p>")
    ids["vpn"] = confluence.add_page(
        "ENG", "VPN Migration",
        '<p>The VPN migration is tracked in <ac:structured-macro ac:name="jira"><ac:parameter ac:name="key">'
        "NET-481</ac:parameter></ac:structured-macro> for the third quarter.</p>")
    ids["billing"] = confluence.add_page(
        "ENG", "Billing Disputes",
        f'<p>Escalate every billing dispute to <ac:link><ri:user ri:account-id="{DANA}"/></ac:link> '
        "within two business days.</p>")
    confluence.add_page(
        "SHARED", "Support Hours",
        '<p>Internal note.</p><ac:structured-macro ac:name="excerpt"><ac:rich-text-body><p>The support desk is '
        "staffed from 08:00 to 18:00 CET on weekdays.</p></ac:rich-text-body></ac:structured-macro>")
    ids["faq"] = confluence.add_page(
        "ENG", "Customer FAQ",
        '<p>Common answers.</p><ac:structured-macro ac:name="excerpt-include"><ac:parameter ac:name="">'
        '<ac:link><ri:page ri:space-key="SHARED" ri:content-title="Support Hours"/></ac:link></ac:parameter>'
        "</ac:structured-macro>")
    return ids


@pytest.fixture
async def synced(services, confluence):  # type: ignore[no-untyped-def]
    ids = build_space(confluence)
    first = await sync(services)
    return ids, first


QUESTIONS = [
    # (question, fact in the answer, cited page key, cited attachment key or None, cited title)
    ("How much are hotel stays reimbursed per night in Lisbon?", "180 euros", "travel", "pdf",
     "hotel-rules.pdf (on Travel Policy)"),
    ("Which laptop does every new hire receive on day one?", "ThinkPad X1 Carbon", "travel", "docx",
     "onboarding.docx (on Travel Policy)"),
    ("What is the annual budget of the Payments team?", "42,000 euros", "finance", "xlsx",
     "budgets-2027.xlsx (on Finance)"),
    ("When does the Oslo data center open?", "September 2027", "finance", "pptx", "roadmap.pptx (on Finance)"),
    ("Are production deploys frozen on Fridays?", "frozen on Fridays after 14:00", "deploys", None, "Deploys"),
    ("On which day does the on-call rotation handover happen?", "every Wednesday", "deploys", None, "Deploys"),
    ("Where does the Berlin office move to?", "Torstrasse 49", "blog", None, "Office move"),
    ("Which Jira issue tracks the VPN migration?", "NET-481", "vpn", None, "VPN Migration"),
    ("Who should I escalate a billing dispute to?", "Dana Scully", "billing", None, "Billing Disputes"),
    ("When is the support desk staffed?", "08:00 to 18:00 CET", "faq", None, "Customer FAQ"),
]


@pytest.mark.parametrize(("question", "fact", "page", "attachment", "title"), QUESTIONS)
async def test_answers_come_from_every_content_kind(  # type: ignore[no-untyped-def]
    synced, services, confluence, question: str, fact: str, page: str, attachment: str | None, title: str
) -> None:
    ids, _ = synced
    answer = await services.engine.answer(question)
    assert not answer.refused and answer.mode == "extractive"
    assert fact in answer.text
    cited = [s for s in answer.sources if s.page_id == ids[page]]
    assert cited, f"{title} not cited: {[s.title for s in answer.sources]}"
    source = next((s for s in cited if s.attachment_id == (ids[attachment] if attachment else None)), None)
    assert source is not None and source.title == title
    data = source.to_json()
    assert data["page_id"] == ids[page]  # the API/CLI JSON keeps the page's id
    if attachment:
        assert data["attachment_id"] == ids[attachment]
        assert source.url.startswith(confluence.base_url) and ids[attachment] in source.url
    else:
        assert "attachment_id" not in data


async def test_first_sync_reports_each_kind_and_the_failed_file(synced, services) -> None:  # type: ignore[no-untyped-def]
    ids, first = synced
    r = first.report
    assert first.status == "partial"  # the corrupt PDF; everything else went in
    assert (r.attachments_indexed, r.attachments_failed) == (4, 1)
    assert r.blogposts_seen == 1 and r.comments_indexed == 2  # the open inline comment stays out
    assert [f.title for f in r.failures] == ["broken-scan.pdf (on Finance)"]
    assert "unreadable pdf file" in r.failures[0].error
    async with services.database.pool.acquire() as conn:
        finance = await conn.fetchval("SELECT count(*) FROM chunks WHERE page_id = $1 AND attachment_id IS NULL",
                                      ids["finance"])
        open_comment = await conn.fetchval("SELECT count(*) FROM chunks WHERE content LIKE '%Mondays instead%'")
    assert finance >= 1 and open_comment == 0  # the page of the broken file is indexed


async def test_second_sync_downloads_nothing_and_changes_are_picked_up(  # type: ignore[no-untyped-def]
    synced, services, confluence
) -> None:
    ids, _ = synced
    confluence.reset_records()
    second = await sync(services)
    assert confluence.attachment_downloads == 0 and second.report.bodies_fetched == 0
    assert second.report.attachments_unchanged == 5 and second.status == "succeeded"

    # A comment edited, one deleted, an attachment deleted and one replaced: no page version changes.
    confluence.edit_comment(ids["footer"], "<p>Decision: production deploys are frozen on Thursdays too.</p>")
    confluence.delete_comment(ids["inline"])
    confluence.delete_attachment(ids["pdf"])
    confluence.update_attachment(ids["pptx"], files.pptx("Roadmap", "The Oslo data center opens in May 2028."))
    confluence.reset_records()
    third = await sync(services)
    assert confluence.attachment_downloads == 1 and third.report.attachments_deleted == 1
    assert third.report.bodies_fetched == 1  # only Deploys, for its comments

    thursday = await services.engine.answer("Are production deploys frozen on Thursdays?")
    assert "frozen on Thursdays too" in thursday.text
    gone = await services.engine.answer("How much are hotel stays reimbursed per night in Lisbon?")
    assert "180 euros" not in gone.text
    assert all(s.attachment_id != ids["pdf"] for s in gone.sources + gone.closest)
    oslo = await services.engine.answer("When does the Oslo data center open?")
    assert "May 2028" in oslo.text and "September 2027" not in oslo.text
    async with services.database.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM chunks WHERE content LIKE '%every Wednesday%'") == 0


async def test_settings_turn_each_kind_off(make_settings, confluence) -> None:  # type: ignore[no-untyped-def]
    from bot.services import build_services
    from tests.conftest import FAST_RETRY

    build_space(confluence)
    settings = make_settings(confluence_include_attachments=False, confluence_include_comments=False,
                             confluence_include_blogposts=False)
    async with build_services(settings, confluence_retry=FAST_RETRY) as services:
        outcome = await sync(services)
        assert outcome.status == "succeeded"
        assert confluence.attachment_downloads == 0
        assert confluence.count("-comments") == 0 and confluence.count("/blogposts") == 0
        async with services.database.pool.acquire() as conn:
            kinds = await conn.fetchval("SELECT count(*) FROM pages WHERE content_type = 'blogpost'")
        assert kinds == 0


async def test_size_cap_and_type_allow_list_skip_files_and_say_so(  # type: ignore[no-untyped-def]
    make_settings, confluence
) -> None:
    from bot.services import build_services
    from tests.conftest import FAST_RETRY

    confluence.add_space("ENG", "Engineering")
    page = confluence.add_page("ENG", "Specs", "<p>Specs live here.</p>")
    confluence.add_attachment(page, "big.pdf", media_type=files.PDF,
                              data=files.pdf([f"line {i} " * 20 for i in range(40)] * 1))
    confluence.add_attachment(page, "photo.png", media_type="image/png", data=b"\x89PNG\r\n\x1a\n")
    confluence.add_attachment(page, "notes.md", media_type="text/markdown", data=b"# Notes\nKeep it short.\n")
    async with build_services(make_settings(confluence_attachment_max_mb=0.005), confluence_retry=FAST_RETRY) as svc:
        outcome = await sync(svc)
        assert outcome.status == "succeeded"
        skipped = "\n".join(outcome.report.skipped_files)
        assert "big.pdf (on Specs): " in skipped and "over the 0.005 MB limit" in skipped
        assert "photo.png (on Specs): type not indexed (image/png)" in skipped
        assert outcome.report.attachments_indexed == 1 and confluence.attachment_downloads == 1
        again = await sync(svc)
        assert again.report.skipped_files == [] and confluence.attachment_downloads == 1


async def test_sync_keeps_a_page_under_a_draft_ancestor(confluence, services) -> None:  # type: ignore[no-untyped-def]
    confluence.add_page("ENG", "Draft parent", "<p>d</p>")
    confluence.pages[confluence.find("Draft parent")].breaks_expand = True
    child = confluence.add_page("ENG", "Child", "<p>The child page stays answerable.</p>",
                                parent_title="Draft parent")
    for _ in range(2):
        outcome = await services.sync.run(spaces=["ENG"], trigger="cli")
        assert isinstance(outcome, RunOutcome) and outcome.status == "succeeded"
        assert outcome.report.pages_deleted == 0
    async with services.database.pool.acquire() as conn:
        assert await conn.fetchval("SELECT status FROM pages WHERE page_id = $1", child) == "current"


async def test_zero_credential_default_answers_every_kind(make_settings, confluence) -> None:  # type: ignore[no-untyped-def]
    """The done-when of issue 14 as shipped by default: the local MiniLM model and extractive answers."""
    from bot.services import build_services
    from tests.conftest import FAST_RETRY

    ids = build_space(confluence)
    settings = make_settings(embedding_provider="local", embedding_model=None, openai_api_key=None)
    async with build_services(settings, confluence_retry=FAST_RETRY) as services:
        assert (await sync(services)).status == "partial"  # only the corrupt PDF failed
        for question, fact, page, _, title in QUESTIONS:
            answer = await services.engine.answer(question)
            assert not answer.refused and fact in answer.text, question
            assert any(s.page_id == ids[page] and s.title == title for s in answer.sources), question
