"""The PostgreSQL-manual corpus: converter behaviour, the shipped demo space, and the benchmark questions."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from bs4 import BeautifulSoup
from lxml import etree

from bench.corpus import (
    DEFAULT_HTML_DIR,
    DEMO_TITLES,
    SourcePage,
    clean_title,
    convert_page,
    iter_manual_pages,
    subset_space,
    unique_titles,
)

ROOT = Path(__file__).resolve().parents[1]
DEMO_PAGES = ROOT / "bot" / "demo" / "pages.jsonl"
GOLDEN = ROOT / "bot" / "demo" / "golden.yaml"
QUESTIONS = ROOT / "bench" / "data" / "retrieval_questions.jsonl"
NAMESPACES = 'xmlns:ac="http://atlassian.com/content" xmlns:ri="http://atlassian.com/resource/identifier"'
NAV_WORDS = {"Prev", "Up", "Home", "Next"}
CODE_MACRO = re.compile(r'<ac:structured-macro ac:name="code">(.*?)</ac:structured-macro>', re.S)

MANUAL_MISSING = f"PostgreSQL manual not installed at {DEFAULT_HTML_DIR} (apt-get install postgresql-doc-15)"
needs_manual = pytest.mark.skipif(not (DEFAULT_HTML_DIR / "index.html").exists(), reason=MANUAL_MISSING)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def demo_pages() -> list[dict[str, Any]]:
    return read_jsonl(DEMO_PAGES)


@pytest.fixture(scope="module")
def manual_pages() -> list[dict[str, Any]]:
    if not (DEFAULT_HTML_DIR / "index.html").exists():
        pytest.skip(MANUAL_MISSING)
    return list(iter_manual_pages(DEFAULT_HTML_DIR))


def page_html(body: str, *, title: str = "25.1. Routine Vacuuming") -> bytes:
    """A page shaped like the manual's DocBook output, navigation included."""
    nav = ('<div class="navheader"><table><tr><td><a accesskey="p" href="maintenance.html">Prev</a></td>'
           '<td><a accesskey="u" href="maintenance.html">Up</a></td>'
           '<td><a accesskey="h" href="index.html">Home</a></td></tr></table><hr/></div>')
    foot = ('<div class="navfooter"><hr/><table><tr><td><a accesskey="n" href="x.html">Next</a></td></tr>'
            "</table></div>")
    return (f'<?xml version="1.0" encoding="UTF-8"?><html xmlns="http://www.w3.org/1999/xhtml"><head>'
            f"<title>{title}</title></head><body>{nav}"
            '<div class="sect1"><div class="titlepage"><div><div>'
            f'<h2 class="title">{title}</h2></div></div></div>'
            f"{body}</div>{foot}</body></html>").encode()


TITLES = {"routine-vacuuming.html": "Routine Vacuuming", "sql-vacuum.html": "VACUUM",
          "maintenance.html": "Routine Database Maintenance Tasks", "index.html": "PostgreSQL Documentation"}


def convert(body: str) -> str:
    return convert_page(page_html(body), file_name="routine-vacuuming.html", titles=TITLES)


@pytest.mark.parametrize(("html", "expected"), [
    ('<div class="sect2"><div class="titlepage"><div><div><h3 class="title">25.1.1. Vacuuming Basics</h3>'
     "</div></div></div><p>Text.</p></div>", "<h2>Vacuuming Basics</h2><p>Text.</p>"),
    ('<p>See <a class="xref" href="sql-vacuum.html" title="VACUUM">the command</a>.</p>',
     '<p>See <ac:link><ri:page ri:content-title="VACUUM"/><ac:plain-text-link-body><![CDATA[the command]]>'
     "</ac:plain-text-link-body></ac:link>.</p>"),
    ('<p>See <a class="ulink" href="https://example.org/a?b=1&amp;c=2">this</a>.</p>',
     '<p>See <a href="https://example.org/a?b=1&amp;c=2">this</a>.</p>'),
    ('<p>Described in <a href="routine-vacuuming.html#AUTOVACUUM">Section 25.1.6</a>.</p>',
     "<p>Described in Section 25.1.6.</p>"),
    ('<pre class="programlisting">SELECT \'a]]>b\';</pre>',
     '<ac:structured-macro ac:name="code"><ac:parameter ac:name="language">sql</ac:parameter>'
     "<ac:plain-text-body><![CDATA[SELECT 'a]]]]><![CDATA[>b';]]></ac:plain-text-body>"
     "</ac:structured-macro>"),
    ('<div class="warning"><h3 class="title">Warning</h3><p>Careful &lt;here&gt;.</p></div>',
     '<ac:structured-macro ac:name="warning"><ac:rich-text-body><p>Careful &lt;here&gt;.</p>'
     "</ac:rich-text-body></ac:structured-macro>"),
    ('<div class="note"><h3 class="title">Note</h3><p>Hi.</p></div>',
     '<ac:structured-macro ac:name="info"><ac:rich-text-body><p>Hi.</p></ac:rich-text-body>'
     "</ac:structured-macro>"),
    ('<div class="table"><p class="title"><strong>Table 8.2. Numeric Types</strong></p>'
     '<div class="table-contents"><table class="table" border="1"><colgroup><col/></colgroup>'
     "<thead><tr><th>Name</th><th>Size</th></tr></thead>"
     "<tbody><tr><td><code class=\"type\">int</code></td><td>4 bytes</td></tr></tbody></table></div></div>",
     "<p><strong>Table 8.2. Numeric Types</strong></p><table><tbody><tr><th>Name</th><th>Size</th></tr>"
     "<tr><td><code>int</code></td><td>4 bytes</td></tr></tbody></table>"),
    ('<div class="itemizedlist"><ul class="itemizedlist"><li class="listitem"><p>One</p></li>'
     '<li class="listitem"><p>Two</p></li></ul></div>', "<ul><li>One</li><li>Two</li></ul>"),
    ('<div class="variablelist"><dl class="variablelist"><dt><span class="term">'
     '<code class="varname">work_mem</code> (<code class="type">integer</code>)'
     '<a class="indexterm" id="x"></a></span></dt><dd><p>Memory.</p></dd></dl></div>',
     "<p><strong><code>work_mem</code> (<code>integer</code>)</strong></p><p>Memory.</p>"),
    ('<div class="sect2"><div class="titlepage"><div><div><h3 class="title">20.4.1. Memory</h3>'
     "</div></div></div>"
     '<div class="variablelist"><dl class="variablelist"><dt id="GUC-WORK-MEM"><span class="term">'
     '<code class="varname">work_mem</code> (<code class="type">integer</code>)</span></dt>'
     "<dd><p>Sets the memory.</p></dd></dl></div></div>",
     "<h2>Memory</h2><h3>work_mem (integer)</h3><p>Sets the memory.</p>"),
])
def test_docbook_constructs_become_storage_format(html: str, expected: str) -> None:
    assert convert(html) == expected


def test_navigation_and_page_title_are_not_in_the_body() -> None:
    body = convert("<p>Only this.</p>")
    assert body == "<p>Only this.</p>"


def test_manual_numbering_is_dropped_from_titles() -> None:
    assert clean_title("Chapter 25. Routine Maintenance Tasks") == "Routine Maintenance Tasks"
    assert clean_title("25.1. Routine  Vacuuming") == "Routine Vacuuming"
    assert clean_title("E.20. Release 15.1") == "Release 15.1"
    assert clean_title("Part III. Server Administration") == "Server Administration"
    assert clean_title("VACUUM") == "VACUUM"


def test_repeated_titles_keep_the_highest_bare_and_qualify_the_rest() -> None:
    sources = [
        SourcePage("index.html", "Docs", None, None, "book"),
        SourcePage("reference.html", "Part VI. Reference", "index.html", None, "part"),
        SourcePage("sql-commands.html", "SQL Commands", "reference.html", None, "reference"),
        SourcePage("sql-prepare.html", "PREPARE", "sql-commands.html", None, "refentry"),
        SourcePage("client-interfaces.html", "Part IV. Client Interfaces", "index.html", None, "part"),
        SourcePage("ecpg.html", "Chapter 36. ECPG", "client-interfaces.html", None, "chapter"),
        SourcePage("ecpg-cmds.html", "36.14. Embedded SQL Commands", "ecpg.html", None, "sect1"),
        SourcePage("ecpg-prepare.html", "PREPARE", "ecpg-cmds.html", None, "refentry"),
        SourcePage("roles.html", "Chapter 22. Database Roles", "index.html", None, "chapter"),
        SourcePage("roles-1.html", "22.1. Database Roles", "roles.html", None, "sect1"),
    ]
    titles = unique_titles(sources)
    assert titles["sql-prepare.html"] == "PREPARE"
    assert titles["ecpg-prepare.html"] == "PREPARE (Embedded SQL Commands)"
    assert titles["roles.html"] == "Database Roles"
    assert titles["roles-1.html"] == "Database Roles (Docs)"
    assert len(set(titles.values())) == len(titles)


def test_subset_unlinks_pages_left_out() -> None:
    link = ('<ac:link><ri:page ri:content-title="{}"/><ac:plain-text-link-body><![CDATA[{}]]>'
            "</ac:plain-text-link-body></ac:link>")
    pages: list[dict[str, Any]] = [
        {"page_id": "1", "title": "A", "parent_title": None, "labels": [],
         "body": f"<ul><li>{link.format('B', 'B')}</li><li>{link.format('C', 'C')} — gone</li></ul>"
                 f"<p>See {link.format('C', 'Section 9')}.</p>"},
        {"page_id": "2", "title": "B", "parent_title": "A", "labels": [], "body": "<p>b</p>"},
        {"page_id": "3", "title": "C", "parent_title": "A", "labels": [], "body": "<p>c</p>"},
    ]
    subset = subset_space(pages, ("A", "B"))
    assert [p["title"] for p in subset] == ["A", "B"]
    assert subset[0]["body"] == f"<ul><li>{link.format('B', 'B')}</li></ul><p>See Section 9.</p>"


# ---- the shipped demo space ----------------------------------------

def test_demo_pages_are_well_formed_storage_format(demo_pages: list[dict[str, Any]]) -> None:
    assert 40 <= len(demo_pages) <= 60
    assert DEMO_PAGES.stat().st_size < 2_000_000
    for page in demo_pages:
        assert set(page) == {"page_id", "title", "parent_title", "labels", "body"}
        assert page["page_id"].isdigit()
        etree.fromstring(f"<root {NAMESPACES}>{page['body']}</root>".encode())  # raises if not well-formed
        soup = BeautifulSoup(page["body"], "html.parser")
        assert soup.get_text(strip=True), page["title"]


def test_demo_titles_unique_and_parents_come_first(demo_pages: list[dict[str, Any]]) -> None:
    titles = [p["title"] for p in demo_pages]
    assert len(set(titles)) == len(titles)
    assert len({p["page_id"] for p in demo_pages}) == len(demo_pages)
    seen: set[str] = set()
    for page in demo_pages:
        assert page["parent_title"] is None or page["parent_title"] in seen, page["title"]
        seen.add(page["title"])
    assert sum(p["parent_title"] is None for p in demo_pages) == 1


def test_demo_links_point_inside_the_space(demo_pages: list[dict[str, Any]]) -> None:
    titles = {p["title"] for p in demo_pages}
    for page in demo_pages:
        soup = BeautifulSoup(page["body"], "html.parser")
        targets = {ri["ri:content-title"] for ri in soup.find_all("ri:page")}
        assert targets <= titles, (page["title"], targets - titles)


def test_demo_code_macros_carry_cdata(demo_pages: list[dict[str, Any]]) -> None:
    macros = [m for p in demo_pages for m in CODE_MACRO.findall(p["body"])]
    assert macros
    for macro in macros:
        cdata = re.search(r"<ac:plain-text-body><!\[CDATA\[.*\]\]></ac:plain-text-body>$", macro, re.S)
        assert cdata, macro[:200]


def test_no_docbook_navigation_leaks_into_demo(demo_pages: list[dict[str, Any]]) -> None:
    for page in demo_pages:
        soup = BeautifulSoup(page["body"], "html.parser")
        assert not [t for t in soup.find_all(string=True) if t.strip() in NAV_WORDS], page["title"]
        assert "navheader" not in page["body"] and "navfooter" not in page["body"]


def test_golden_questions_cite_demo_pages(demo_pages: list[dict[str, Any]]) -> None:
    titles = {p["title"] for p in demo_pages}
    golden = yaml.safe_load(GOLDEN.read_text(encoding="utf-8"))
    refusals = [g for g in golden if g.get("expect_refusal")]
    assert len(golden) >= 18 and 3 <= len(refusals) <= 4
    for item in golden:
        assert item["question"].strip()
        if item.get("expect_refusal"):
            assert not item.get("expect_titles")
        else:
            assert item["expect_titles"] and set(item["expect_titles"]) <= titles, item


def test_retrieval_questions_file_shape() -> None:
    questions = read_jsonl(QUESTIONS)
    assert all(set(q) == {"question", "answer_titles", "space"} and q["space"] == "PG" for q in questions)
    assert len({q["question"] for q in questions}) == len(questions)
    assert sum(bool(q["answer_titles"]) for q in questions) >= 120
    assert sum(not q["answer_titles"] for q in questions) >= 15


# ---- the full manual (when installed) ----------------------------------------

@needs_manual
def test_whole_manual_converts_quickly() -> None:
    started = time.perf_counter()
    count = sum(1 for _ in iter_manual_pages(DEFAULT_HTML_DIR))
    assert count >= 1000
    assert time.perf_counter() - started < 60


def test_manual_titles_unique_and_parents_exist(manual_pages: list[dict[str, Any]]) -> None:
    titles = [p["title"] for p in manual_pages]
    assert len(set(titles)) == len(titles)
    known = set(titles)
    assert all(p["parent_title"] is None or p["parent_title"] in known for p in manual_pages)
    links = {t for p in manual_pages for t in re.findall(r'ri:content-title="([^"]*)"', p["body"])}
    assert {BeautifulSoup(t, "html.parser").get_text() for t in links} <= known


def test_retrieval_answers_exist_in_manual(manual_pages: list[dict[str, Any]]) -> None:
    titles = {p["title"] for p in manual_pages}
    missing = {t for q in read_jsonl(QUESTIONS) for t in q["answer_titles"]} - titles
    assert not missing


def test_shipped_demo_matches_a_fresh_conversion(manual_pages: list[dict[str, Any]],
                                                 demo_pages: list[dict[str, Any]]) -> None:
    assert subset_space(manual_pages, DEMO_TITLES) == demo_pages
