"""Converter fidelity (issue 14): macros and markup whose facts used to vanish or land under the wrong header."""

from __future__ import annotations

import pytest

from ingest.storage_format import MAX_INCLUDE_DEPTH, normalised_text, references, to_sections

JIRA_KEY = (
    '<p>Tracked in <ac:structured-macro ac:name="jira" ac:schema-version="1">'
    '<ac:parameter ac:name="server">Acme JIRA</ac:parameter>'
    '<ac:parameter ac:name="key">PAY-1042</ac:parameter></ac:structured-macro> for Q3.</p>'
)
JIRA_TABLE = (
    '<ac:structured-macro ac:name="jira"><ac:parameter ac:name="jqlQuery">project = PAY AND status = Open'
    '</ac:parameter><ac:parameter ac:name="columns">key,summary</ac:parameter></ac:structured-macro>'
)
ROWSPAN = (
    "<table><tbody><tr><th>Env</th><th>Host</th><th>Port</th></tr>"
    '<tr><td rowspan="2">prod</td><td>db1</td><td>5432</td></tr>'
    "<tr><td>db2</td><td>6432</td></tr>"
    '<tr><td colspan="2">staging (shared)</td><td>7432</td></tr></tbody></table>'
)
TABS = (
    '<ac:structured-macro ac:name="ui-tabs"><ac:rich-text-body>'
    '<ac:structured-macro ac:name="ui-tab"><ac:parameter ac:name="title">Linux</ac:parameter>'
    "<ac:rich-text-body><p>Run install.sh as root.</p></ac:rich-text-body></ac:structured-macro>"
    '<ac:structured-macro ac:name="ui-tab"><ac:parameter ac:name="title">macOS</ac:parameter>'
    "<ac:rich-text-body><p>Use the pkg installer.</p></ac:rich-text-body></ac:structured-macro>"
    "</ac:rich-text-body></ac:structured-macro>"
)
MENTION_CLOUD = '<p>Ask <ac:link><ri:user ri:account-id="557058:f00d"/></ac:link> about refunds.</p>'
MENTION_DC = '<p>Ask <ac:link><ri:user ri:userkey="8a7f808a7a1c"/></ac:link> about refunds.</p>'


def include(title: str, macro: str = "include") -> str:
    return (f'<ac:structured-macro ac:name="{macro}"><ac:parameter ac:name="">'
            f'<ac:link><ri:page ri:content-title="{title}"/></ac:link></ac:parameter></ac:structured-macro>')


def text(body: str, **kwargs: object) -> str:
    return normalised_text(to_sections(body, title="Page", **kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (JIRA_KEY, "Tracked in Jira PAY-1042 for Q3."),
        (JIRA_TABLE, "Jira issues: project = PAY AND status = Open"),
        (ROWSPAN, "Env: prod; Host: db2; Port: 6432"),
        (ROWSPAN, "Env: prod; Host: db1; Port: 5432"),
        (ROWSPAN, "staging (shared); Port: 7432"),
        (TABS, "Linux\n\nRun install.sh as root.\n\nmacOS\n\nUse the pkg installer."),
    ],
)
def test_macro_facts_survive(body: str, expected: str) -> None:
    assert expected in text(body)


def test_mentions_become_display_names_when_known() -> None:
    assert "Ask @Dana Scully about refunds." in text(MENTION_CLOUD, users={"557058:f00d": "Dana Scully"})
    assert "Ask @Dana Scully about refunds." in text(MENTION_DC, users={"8a7f808a7a1c": "Dana Scully"})
    assert "Ask @user about refunds." in text(MENTION_CLOUD)
    assert references(MENTION_CLOUD + MENTION_DC).users == {
        ("ri:account-id", "557058:f00d"), ("ri:userkey", "8a7f808a7a1c")}


def test_include_and_excerpt_include_inline_the_other_page() -> None:
    shared = ('<p>Not in the excerpt.</p><ac:structured-macro ac:name="excerpt"><ac:rich-text-body>'
              "<p>Support hours are 8-18 CET.</p></ac:rich-text-body></ac:structured-macro>")
    body = "<p>Before.</p>" + include("Shared") + "<p>Middle.</p>" + include("Shared", "excerpt-include")
    assert references(body).includes == {(None, "Shared")}
    out = text(body, includes={"Shared": shared})
    assert out.count("Support hours are 8-18 CET.") == 2
    assert out.count("Not in the excerpt.") == 1
    assert "Before." in out and "Middle." in out
    assert "Support hours" not in text(body)  # unresolved: dropped as before


def test_includes_are_cycle_safe_and_depth_limited() -> None:
    cyclic = {"A": "<p>fact A</p>" + include("B"), "B": "<p>fact B</p>" + include("A") + include("Page")}
    out = text(include("A"), includes=cyclic)
    assert out.count("fact A") == 1 and out.count("fact B") == 1
    chain = {f"P{i}": f"<p>level {i}</p>" + include(f"P{i + 1}") for i in range(10)}
    deep = text(include("P0"), includes=chain)
    assert "level 0" in deep and f"level {MAX_INCLUDE_DEPTH + 1}" not in deep
