"""Storage format → sections: what a reader of a page expects to find in its text, over real samples."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.models import Section
from ingest.storage_format import content_checksum, normalised_text, to_sections

SAMPLES = Path(__file__).parent / "samples"
# Markup that must never reach the index: tags, CDATA markers, escaped entities.
LEAK = re.compile(r"<[A-Za-z/!?]|\bac:|\bri:|CDATA\[|&(nbsp|amp|lt|gt|quot|rsquo|mdash);")


def sections_of(name: str, title: str = "Sample") -> list[Section]:
    return to_sections((SAMPLES / name).read_text(encoding="utf-8"), title=title)


def text_under(sections: list[Section], path: tuple[str, ...]) -> str:
    return "\n\n".join(s.text for s in sections if s.heading_path == path)


def test_every_sample_converts_without_markup_leaks() -> None:
    names = sorted(p.name for p in SAMPLES.glob("*.xml"))
    assert len(names) >= 6
    for name in names:
        sections = sections_of(name)
        assert sections, name
        for section in sections:
            assert section.text.strip() or section.heading_path, (name, section)
            assert not LEAK.search(section.text), (name, LEAK.search(section.text))
            assert not any(LEAK.search(h) for h in section.heading_path), (name, section.heading_path)


RUNBOOK = "runbook_payments_deploy.xml"
HR = "hr_leave_policy.xml"
VPN = "howto_vpn_setup.xml"
ORDERS = "architecture_order_service.xml"
ONCALL = "oncall_handbook.xml"
STAGING = "staging_environment.xml"
IMAGES = "image_only_network_diagram.xml"
MALFORMED = "malformed_legacy_import.xml"

# (sample, heading path, text a reader expects under that heading)
EXPECTED = [
    # panels keep their kind and title
    (RUNBOOK, (), "Warning: Deploy freeze\nNo payments deploys between the 28th and the 2nd"),
    (RUNBOOK, ("Rolling back",), "Note: Database migrations are never rolled back"),
    (RUNBOOK, ("Deploying", "Canary"), "Info: The canary dashboard is Payments Canary."),
    # code stays code: fenced, language kept, indentation and shell operators intact
    (RUNBOOK, ("Deploying", "Canary"),
     "```bash\nexport RELEASE=payments-api-v4.12.0\nkubectl --context prod-eu1"),
    (RUNBOOK, ("Deploying", "Canary"),
     '\n    echo "canary not healthy" >&2 && exit 1\nfi\n```'),
    (RUNBOOK, ("Rolling back",), "-- values with ]]> in them survive a split CDATA section"),
    # links keep their text, or the linked page's title; status lozenges keep their label; mentions
    (RUNBOOK, ("Before you start",), "1. Check the on-call rota and tell"),
    (RUNBOOK, ("Before you start",), "3. Read Payments Release Checklist."),
    (RUNBOOK, (), "Owner: @user (Payments team). Current state: VERIFIED"),
    # tables: every row keeps its column headers
    (HR, ("Annual leave",),
     "Length of service: 2 to 5 years; Extra days: 2; Applies from: The January after your 2nd anniversary"),
    (HR, ("Parental leave",),
     "Country: United Kingdom; Primary carer: 20 weeks at full pay; Secondary carer: 6 weeks at full pay"),
    (HR, ("Parental leave",), "\nOther countries: see the local addendum"),
    (HR, ("Contacts",), "Payroll: payroll@acme-freight.example | Slack #payroll"),
    (ONCALL, ("On-call handbook", "Severity levels"),
     "Severity: SEV1; Example: Checkout down for all customers; Response time: 15 minutes, 24/7"),
    # entities, dates and emoticons become plain characters
    (HR, ("Sick leave",), "A doctor’s note is required from the fourth consecutive day"),
    (HR, (), "Last reviewed 2024-03-18 by People Operations."),
    (HR, ("Annual leave", "Requesting leave"), "within 5 working days ✔️."),
    (HR, ("Sick leave",), "Tip: Sick days during approved annual leave"),
    # task lists, attachments, images, headings inside page layouts
    (VPN, ("Steps",), "[x] Install Acme Connect from the Self Service app"),
    (VPN, ("Steps",), "[ ] Import the profile acme-wg-profile.conf attached to this page"),
    (VPN, ("Steps",), "[ ] Ask @user to approve your device by 2024-07-15"),
    (VPN, ("Steps",), "[Image: The Acme Connect sign-in window]"),
    (VPN, ("Prerequisites",), "- Your hardware key (YubiKey 5) registered in Okta."),
    (VPN, ("Troubleshooting",),
     'Error "handshake did not complete"\n\nYour clock is more than 2 minutes off.'),
    (VPN, ("Troubleshooting",), "Note: Need help?\nOpen a ticket in the IT portal"),
    # nested lists stay nested; expand macros keep title and body; noformat is code too
    (ORDERS, ("Components",),
     "- API layer\n  - order-api: REST, 12 pods, autoscaled on CPU\n  - partner-gateway: gRPC, mTLS only\n"
     "    - certificates are rotated every 30 days by cert-manager\n- Workers\n"
     "  1. reservation-worker consumes orders.created"),
    (ORDERS, ("Data flow", "Happy path"),
     "Why Kafka and not RabbitMQ?\n\nWe chose Kafka in 2022"),
    (ORDERS, ("Data flow", "Happy path"), "- Retention on orders.* topics is 7 days."),
    (ORDERS, ("Data flow", "Failure handling"), "```\nPENDING --reserve--> RESERVED"),
    (ORDERS, ("Environments",), "The staging database is rebuilt every Sunday at 02:00"),
    (ORDERS, ("Environments", "Production"), "Deploys Tuesday and Thursday only."),
    (ORDERS, (), "Status: APPROVED"),
    (ORDERS, ("Overview",), "[Image: Order service context diagram]"),
    # unknown macros keep their body text
    (ONCALL, ("On-call handbook", "Escalation"), "Quarterly goal: reduce pages per week below 5."),
    (ONCALL, ("On-call handbook", "Tools"), "Runbooks live under Runbooks. :warning: Never silence an alert"),
    (STAGING, ("Schedule",), "- The staging database is rebuilt every Sunday at 02:00 UTC."),
    (STAGING, ("Access",), "```yaml\n# ~/.kube/config excerpt\ncontexts:\n  - name: staging-eu1"),
    (IMAGES, (), "[Image: office-network-berlin-2024.png]"),
    (IMAGES, (), "[Image: wan-overview.png]"),
    # broken markup still yields its text and headings
    (MALFORMED, (), "shut down on 30 June 2025."),
    (MALFORMED, ("Access",), "Host Port: ftp01.acme-freight.net 2121"),
    (MALFORMED, ("Access",), "```\nlftp -u $USER ftps://ftp01.acme-freight.net:2121\n```"),
    (MALFORMED, ("Access",), "Trailing paragraph that is never closed"),
]


@pytest.mark.parametrize(("sample", "path", "expected"), EXPECTED)
def test_reader_finds_text_under_its_heading(sample: str, path: tuple[str, ...], expected: str) -> None:
    assert expected in text_under(sections_of(sample), path)


# (sample, text that is page furniture or macro configuration, never content)
ABSENT = [
    (RUNBOOK, "Acme JIRA"),  # jira macro: the server parameter (its issue key stays, issue 14)
    (RUNBOOK, "maxLevel"),  # toc parameter
    (RUNBOOK, "Green"),  # status colour parameter
    (ONCALL, "youtube"),  # widget parameter
    (ONCALL, "handover-anchor"),  # anchor name
    (ONCALL, "Roadmap"),  # macro parameter
    (VPN, "#DEEBFF"),  # panel colour
    (VPN, "3f0c1b9a"),  # task uuid
    (HR, "width"),  # colgroup style
]


@pytest.mark.parametrize(("sample", "text"), ABSENT)
def test_macro_configuration_is_not_indexed(sample: str, text: str) -> None:
    assert text not in normalised_text(sections_of(sample))


def test_headings_build_the_path_and_text_before_them_has_none() -> None:
    sections = sections_of("runbook_payments_deploy.xml")
    assert [s.heading_path for s in sections] == [
        (), ("Before you start",), ("Deploying", "Canary"), ("Deploying", "Full rollout"), ("Rolling back",),
        ("Related",),
    ]
    assert sections[-1].text == "Jira PAY-1042"  # a jira macro keeps its issue key (issue 14); the rest is generated


def test_heading_with_nothing_under_it_is_kept_unless_it_is_a_parent() -> None:
    body = "<h1>A</h1><h2>B</h2><p>x</p><h2>C</h2><h1>D</h1><h2>  </h2>"
    assert to_sections(body, title="T") == [
        Section(("A", "B"), "x"), Section(("A", "C"), ""), Section(("D",), "")
    ]


def test_leading_heading_that_repeats_the_title_is_dropped() -> None:
    paths = [s.heading_path for s in sections_of("oncall_handbook.xml", title="On-call handbook")]
    assert paths[:3] == [(), ("Rotation",), ("Severity levels",)]
    with_other_title = [s.heading_path for s in sections_of("oncall_handbook.xml", title="Handbook")]
    assert with_other_title[1] == ("On-call handbook", "Rotation")


def test_page_without_text_has_no_sections() -> None:
    empty = '<ac:structured-macro ac:name="toc" /><p> &nbsp; </p><h1>  </h1><p><br/></p>'
    assert to_sections(empty, title="T") == []
    assert to_sections("", title="T") == []


# Pairs that differ only in markup, whitespace or attributes: same checksum.
SAME = [
    ("<p>a b</p>", '<p class="x">a  \n b  </p>'),
    ("<p>a</p>", "<p>a</p>\n\n<p> </p>"),
    ('<ac:structured-macro ac:name="info" ac:macro-id="1"><ac:rich-text-body><p>Hi</p></ac:rich-text-body>'
     "</ac:structured-macro>",
     '<ac:structured-macro ac:macro-id="2" ac:schema-version="1" ac:name="info"><ac:rich-text-body><p>Hi'
     "</p></ac:rich-text-body></ac:structured-macro>"),
    ("<h1>T</h1><p>x&nbsp;y</p>", "<h1> T </h1><p>x y</p>"),
    ("<p><strong>bold</strong> text</p>", "<p><em>bold</em> text</p>"),
    ("<p>a</p>", "<p>a</p><ac:structured-macro ac:name='toc'/>"),
    ('<p><ac:link><ri:page ri:content-title="X" ri:version-at-save="3"/></ac:link></p>',
     '<p><ac:link><ri:page ri:version-at-save="4" ri:content-title="X"/></ac:link></p>'),
]
# Pairs whose visible text differs: different checksum.
DIFFERENT = [
    ("<p>a b</p>", "<p>a c</p>"),
    ("<p>ab</p>", "<p>a b</p>"),
    ("<h1>T</h1><p>x</p>", "<h1>U</h1><p>x</p>"),
    ("<h1>T</h1><p>x</p>", "<h1>S</h1><h1>T</h1><p>x</p>"),
    ("<p>T</p><p>x</p>", "<h1>T</h1><p>x</p>"),
    ('<ac:structured-macro ac:name="code"><ac:plain-text-body><![CDATA[if x:\n    y]]></ac:plain-text-body>'
     "</ac:structured-macro>",
     '<ac:structured-macro ac:name="code"><ac:plain-text-body><![CDATA[if x:\n  y]]></ac:plain-text-body>'
     "</ac:structured-macro>"),
    ("<table><tr><th>A</th></tr><tr><td>1</td></tr></table>",
     "<table><tr><th>B</th></tr><tr><td>1</td></tr></table>"),
    ('<p><ac:link><ri:page ri:content-title="X"/></ac:link></p>',
     '<p><ac:link><ri:page ri:content-title="Y"/></ac:link></p>'),
]


@pytest.mark.parametrize(("before", "after"), SAME)
def test_markup_only_edit_keeps_the_checksum(before: str, after: str) -> None:
    assert content_checksum(to_sections(before, title="T")) == content_checksum(to_sections(after, title="T"))


@pytest.mark.parametrize(("before", "after"), DIFFERENT)
def test_visible_edit_changes_the_checksum(before: str, after: str) -> None:
    assert content_checksum(to_sections(before, title="T")) != content_checksum(to_sections(after, title="T"))


def test_checksum_of_every_sample_ignores_reformatting() -> None:
    for path in SAMPLES.glob("*.xml"):
        body = path.read_text(encoding="utf-8")
        reformatted = body.replace("<p>", '<p data-x="1">').replace("ac:schema-version=\"1\"", "")
        assert content_checksum(to_sections(body, title="T")) == content_checksum(
            to_sections(reformatted, title="T")
        ), path.name


# (broken body, words that must survive it)
BROKEN = [
    ("<div>" * 500 + "<p>deep text</p>" + "</div>" * 500, ["deep", "text"]),
    ("<ul><li>" * 300 + "deep item", ["deep", "item"]),
    ("<span>" * 2000 + "deep span" + "<table><tr><td>" * 300 + "cell", ["deep", "span", "cell"]),
    ("<p>unclosed <b>bold <i>italic", ["unclosed", "bold", "italic"]),
    ("a < b and c > d & e", ["and", "e"]),
    ("<![CDATA[ never closed <p>x</p>", ["never", "closed"]),
    ("<![if !supportLists]>x<![endif]>", []),
    ("<?xml version='1.0'?><root>xml root</root>", ["root"]),
    ("https://example.com/page", ["https://example.com/page"]),
    ("notes.txt", ["notes.txt"]),
    ("\x00\x01\x02 bytes \udcff \ufffd", ["bytes"]),
    ('<ac:structured-macro ac:name="code"><ac:plain-text-body><![CDATA[echo hi', ["echo", "hi"]),
    ("<table><tr><td colspan='x'>a</td><td colspan='99999999'>b</td></tr></table>", ["a", "b"]),
    ('<ol start="nope"><li>one</li></ol>', ["one"]),
    ("</p></div></table>stray closers", ["stray", "closers"]),
    ("<h1>" + "long " * 2000, ["long"]),
    ("<p>before</p><![ x <p>after</p>", ["before", "after"]),
    ("<p>before</p><![foo[bar]]><p>after</p>", ["before", "after"]),
]


@pytest.mark.parametrize(("body", "words"), BROKEN, ids=range(len(BROKEN)))
def test_broken_markup_never_raises_and_keeps_words(body: str, words: list[str]) -> None:
    text = normalised_text(to_sections(body, title="T"))
    for word in words:
        assert word in text
    assert "CDATA[" not in text and "<p" not in text and "<h1" not in text


def test_two_megabyte_page_converts_in_seconds() -> None:
    paths = sorted(SAMPLES.glob("*.xml"))
    bodies = [p.read_text(encoding="utf-8") for p in paths if "malformed" not in p.name]
    page = "".join(bodies) * (2_000_000 // len("".join(bodies)) + 1)
    started = time.perf_counter()
    sections = to_sections(page, title="Big")
    assert time.perf_counter() - started < 10
    assert sum("rebuilt every Sunday at 02:00 UTC" in s.text for s in sections) > 100


_TAGS = st.sampled_from([
    "<p>", "</p>", "<h2>", "</h2>", "<ul><li>", "</li></ul>", "<table><tr><th>", "<td>", "</tr></table>",
    '<ac:structured-macro ac:name="code">', '<ac:structured-macro ac:name="warning">',
    "</ac:structured-macro>", "<ac:rich-text-body>", "</ac:rich-text-body>", "<ac:plain-text-body><![CDATA[",
    "]]></ac:plain-text-body>", "<![", "<![x[", "<?", "<!DOCTYPE",
    '<ac:link><ri:page ri:content-title="P"/>', "</ac:link>", "<ac:task-list><ac:task><ac:task-body>",
    "<br/>", "<", ">", "&", "&amp;", "&#x1F600;", "<![CDATA[", "]]>", "<!--", "-->", '<ac:image ac:alt="a">',
])


@settings(deadline=None, max_examples=100)
@given(st.lists(st.one_of(_TAGS, st.text(max_size=20)), max_size=40))
def test_markup_soup_never_raises(parts: list[str]) -> None:
    sections = to_sections("".join(parts), title="T")
    for section in sections:
        assert section.text.strip() or section.heading_path
    assert len(content_checksum(sections)) == 64


@settings(deadline=None, max_examples=100)
@given(st.lists(st.from_regex(r"[A-Za-z]{1,12}", fullmatch=True), min_size=1, max_size=30), st.data())
def test_words_in_well_formed_markup_survive(words: list[str], data: st.DataObject) -> None:
    wrappers = ["<p>{}</p>", "<h3>{}</h3>", "<ul><li>{}</li></ul>", "<table><tr><td>{}</td></tr></table>",
                '<ac:structured-macro ac:name="note"><ac:rich-text-body><p>{}</p></ac:rich-text-body>'
                "</ac:structured-macro>", "<p><strong>{}</strong></p>", "<div><div>{}</div></div>"]
    body = "".join(data.draw(st.sampled_from(wrappers)).format(word) for word in words)
    text = normalised_text(to_sections(body, title="-"))
    for word in words:
        assert word in text
