"""Confluence storage-format XHTML → plain-text sections under their heading path.

Pure: no I/O. The output is what a reader sees on the page, in a form that embeds and cites well: lists as
"- item" lines, table rows that repeat their column headers, code fenced with ```, panels prefixed "Note:".
Storage format reference: https://confluence.atlassian.com/doc/confluence-storage-format-790796544.html

Over 400 lines on purpose: one walk over the soup with a handler per element and macro; the handlers share
its state (heading path, current section), so they stay together.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from bs4 import BeautifulSoup
from bs4.element import (
    CData,
    Comment,
    Declaration,
    Doctype,
    NavigableString,
    PageElement,
    ProcessingInstruction,
    Tag,
)

from ingest.models import Section

# Deeper than this, a subtree is flattened to its text: keeps recursion far from Python's limit.
_MAX_DEPTH = 40
_HEADING_LEVELS = {f"h{n}": n for n in range(1, 7)}
# Walked through at the top level so that headings inside page layouts and section/column macros count.
_CONTAINERS = frozenset(
    {"[document]", "html", "body", "div", "section", "article", "main", "center",
     "ac:layout", "ac:layout-section", "ac:layout-cell", "ac:rich-text-body", "ac:adf-content"}
)
# Tabs (Composition Setup's ui-tab, Aura/others' tab panes, Refined's cards): their titles are what a reader
# clicks, so each is kept as a line before the tab's content.
_TAB_MACROS = frozenset({"ui-tab", "tab", "tab-pane", "horizontal-tab", "vertical-tab", "card", "tabs-page"})
_TRANSPARENT_MACROS = frozenset(
    {"section", "column", "div", "excerpt", "details", "ui-tabs", "deck", "tabs", "horizontal-tabs",
     "vertical-tabs", "tabs-container", *_TAB_MACROS}
)
_BLOCK_TAGS = frozenset(
    {"p", "div", "ul", "ol", "li", "table", "pre", "blockquote", "hr", "dl", "section", "article",
     "main", "center", "ac:task-list", "ac:layout", "ac:layout-section", "ac:layout-cell",
     *_HEADING_LEVELS}
)
_INLINE_MACROS = frozenset({"status", "anchor", "jira", "mention"})
_PANELS = {"info": "Info", "note": "Note", "warning": "Warning", "tip": "Tip", "panel": "Note"}
# Macros whose output is generated from elsewhere: nothing of this page's text is in them. (include and
# excerpt-include are inlined beforehand when the caller resolved them; left unresolved they drop out.)
_DROPPED_MACROS = frozenset(
    {"toc", "toc-zone", "children", "anchor", "recently-updated", "contributors",
     "pagetree", "livesearch", "attachments", "include", "excerpt-include", "blog-posts",
     "create-from-template"}
)
_INCLUDE_MACROS = frozenset({"include", "excerpt-include"})
# Nested includes deeper than this are dropped: an include of an include of an include is rare and a cycle
# through differently titled copies must still end.
MAX_INCLUDE_DEPTH = 3
# How storage format names a user: Cloud an account id, Data Center a userkey (older pages: a username).
USER_ATTRIBUTES = ("ri:account-id", "ri:userkey", "ri:username")
_NAME = "askdocs-display-name"  # set on <ri:user> once its display name is known
_SKIPPED_TAGS = frozenset(
    {"ac:parameter", "ac:placeholder", "ac:adf-fallback", "ac:adf-attribute", "script", "style",
     "ac:task-id", "ac:task-uuid", "ac:task-status"}
)
# Cells and items that html.parser nests inside each other when their end tags are missing.
_SPACED = frozenset({"td", "th", "tr", "dt", "dd", "caption"})
_INVISIBLE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\u200b\ufeff\ud800-\udfff]")
_MARKED_SECTION = re.compile(r"<!\[(?!CDATA\[)")
_TAG = re.compile(r"<[^>]*>?")


def to_sections(
    body: str, *, title: str, users: Mapping[str, str] | None = None, includes: Mapping[str, str] | None = None
) -> list[Section]:
    """Split a storage-format body into sections of visible text, keyed by heading path.

    A leading heading that only repeats the page title is dropped: the title is in every chunk header anyway.
    `users` maps an account id / userkey / username to a display name (mentions read "@Name"); `includes`
    maps a page title to its storage-format body, inlined where an include macro (the whole body) or an
    excerpt-include macro (its excerpt) names it — cycle-safe and at most MAX_INCLUDE_DEPTH deep.
    """
    builder = _SectionBuilder(title=_one_line(title))
    soup = _parse(body)
    if soup is None:
        builder.add([_paragraph(html.unescape(_TAG.sub(" ", body)))])
    else:
        _resolve(soup, users or {}, includes or {}, seen=(title,))
        _walk(soup, builder)
    return builder.finish()


@dataclass(frozen=True)
class References:
    """What a body names that only the API can resolve: users mentioned, pages included."""

    users: frozenset[tuple[str, str]]  # (USER_ATTRIBUTES member, value)
    includes: frozenset[tuple[str | None, str]]  # (space key or None for the page's own space, title)


def references(body: str) -> References:
    """The users and included pages a body names (for the caller to look up before `to_sections`)."""
    soup = _parse(body)
    if soup is None:
        return References(frozenset(), frozenset())
    users = {
        (attribute, str(tag[attribute]))
        for tag in soup.find_all("ri:user") for attribute in USER_ATTRIBUTES if tag.get(attribute)
    }
    included: set[tuple[str | None, str]] = set()
    for macro in soup.find_all(["ac:structured-macro", "ac:macro"]):
        target = _include_target(macro)
        if target is not None:
            included.add(target)
    return References(frozenset(users), frozenset(included))


def _include_target(macro: Tag) -> tuple[str | None, str] | None:
    if _macro_name(macro) not in _INCLUDE_MACROS:
        return None
    page = macro.find("ri:page")
    if not isinstance(page, Tag) or not page.get("ri:content-title"):
        return None
    space = page.get("ri:space-key")
    return (str(space) if space else None, str(page["ri:content-title"]))


def _resolve(soup: Tag, users: Mapping[str, str], includes: Mapping[str, str], *, seen: tuple[str, ...]) -> None:
    """Name mentioned users and inline included pages in place, before the walk."""
    for tag in soup.find_all("ri:user"):
        for attribute in USER_ATTRIBUTES:
            name = users.get(str(tag.get(attribute) or ""))
            if name:
                tag[_NAME] = name
                break
    for macro in soup.find_all(["ac:structured-macro", "ac:macro"]):
        target = _include_target(macro)
        if target is None or macro.parent is None:
            continue
        title = target[1]
        included = includes.get(title)
        if included is None or title in seen or len(seen) > MAX_INCLUDE_DEPTH:
            continue  # unresolved, a cycle or too deep: the macro drops out as before
        parsed = _parse(included)
        if parsed is None:
            continue
        content: Tag = parsed
        if _macro_name(macro) == "excerpt-include":
            excerpt = next((m for m in content.find_all(["ac:structured-macro", "ac:macro"])
                            if _macro_name(m) == "excerpt"), None)
            if excerpt is None:
                continue
            content = _body(excerpt, "ac:rich-text-body")
        _resolve(content, users, includes, seen=(*seen, title))
        holder = Tag(name="div")
        for child in list(content.children):
            holder.append(child.extract())
        macro.replace_with(holder)


def normalised_text(sections: list[Section]) -> str:
    """The visible text and headings of a page, in one canonical string (the basis of the checksum)."""
    parts = []
    for section in sections:
        heading = " > ".join(section.heading_path)
        lines = [line.rstrip() for line in section.text.strip().split("\n")]
        parts.append(("# " + heading + "\n" if heading else "") + "\n".join(lines))
    return "\n\n".join(parts)


def content_checksum(sections: list[Section]) -> str:
    """sha256 hex of the normalised text: equal for markup-only edits, different when visible text changes."""
    return hashlib.sha256(normalised_text(sections).encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class _SectionBuilder:
    """Collects blocks under the current heading path; a new heading closes the section."""

    title: str
    headings: list[tuple[int, str]] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    started: bool = False
    closed: bool = False  # has the current heading's section been emitted?

    def heading(self, level: int, text: str) -> None:
        if not text:
            return
        if not self.started and text.casefold() == self.title.casefold():
            return
        # A heading with nothing under it stays visible as an empty section, unless it is just the parent
        # of the next heading (then it is in that one's path).
        self._close(keep_empty=not self.headings or level <= self.headings[-1][0])
        self.started = True
        while self.headings and self.headings[-1][0] >= level:
            self.headings.pop()
        self.headings.append((level, text))
        self.closed = False

    def add(self, blocks: Iterable[str]) -> None:
        kept = [block for block in blocks if block.strip()]
        self.blocks.extend(kept)
        self.started = self.started or bool(kept)

    def finish(self) -> list[Section]:
        self._close(keep_empty=True)
        return self.sections

    def _close(self, *, keep_empty: bool) -> None:
        path = tuple(text for _, text in self.headings)
        if self.blocks or (keep_empty and path and not self.closed):
            self.sections.append(Section(heading_path=path, text="\n\n".join(self.blocks)))
        self.blocks = []
        self.closed = True


def _parse(body: str) -> BeautifulSoup | None:
    """Parse leniently; None when even html.parser gives up (then the caller strips tags by regex).

    The "<div>\n" prefix keeps bs4 from mistaking a short body for a URL or file name, or a body opening with
    "<?xml" for an XML document: both warnings would be errors under our pytest settings.
    """
    body = "<div>\n" + _close_cdata(body)
    try:
        return BeautifulSoup(body, "html.parser")
    except Exception:  # html.parser asserts on marked sections it can't name ("<![ x"); a page must convert
        pass
    try:
        return BeautifulSoup(_MARKED_SECTION.sub("&lt;![", body), "html.parser")
    except Exception:
        return None


def _close_cdata(body: str) -> str:
    """End CDATA sections that lack their "]]>", so the markup after one isn't all read as code."""
    start = body.find("<![CDATA[")
    while start != -1:
        end = body.find("]]>", start + 9)
        if end != -1:
            start = body.find("<![CDATA[", end + 3)
            continue
        # End it where its macro body ends; with no end in sight it was never CDATA: drop the marker.
        cut = body.find("</ac:", start)
        body = body[:start] + body[start + 9 :] if cut == -1 else body[:cut] + "]]>" + body[cut:]
        start = body.find("<![CDATA[", start if cut == -1 else cut + 3)
    return body


def _walk(root: Tag, builder: _SectionBuilder) -> None:
    """Walk the top level iteratively: headings open sections, containers are entered, blocks rendered."""
    stack: list[Iterator[PageElement]] = [iter(root.children)]
    run: list[PageElement] = []
    while stack:
        node = next(stack[-1], None)
        if node is None:
            stack.pop()
            builder.add(_flush(run, 0))
            continue
        if not isinstance(node, Tag) or not (_is_block(node) or _has_block_child(node)):
            run.append(node)
            continue
        builder.add(_flush(run, 0))
        if not _is_block(node):  # an unclosed <b> or <span> swallowing the rest of the page
            stack.append(iter(node.children))
        elif node.name in _HEADING_LEVELS:
            # An unclosed heading swallows what follows it: only its leading inline text is the heading.
            children = list(node.children)
            inline = next((i for i, c in enumerate(children) if isinstance(c, Tag) and _is_block(c)), None)
            builder.heading(_HEADING_LEVELS[node.name], _one_line(_inline_text(children[:inline], 1)))
            stack.append(iter(children[len(children) if inline is None else inline :]))
        elif node.name in _CONTAINERS or node.name in ("p", "blockquote"):
            stack.append(iter(node.children))
        elif _macro_name(node) in _TRANSPARENT_MACROS:
            builder.add([_tab_title(node)])
            stack.append(iter(_body(node, "ac:rich-text-body").children))
        else:
            builder.add(_block(node, 1))


def _has_block_child(tag: Tag) -> bool:
    return tag.name not in _SKIPPED_TAGS and any(isinstance(c, Tag) and _is_block(c) for c in tag.children)


def _flush(run: list[PageElement], depth: int) -> list[str]:
    """Turn a run of inline nodes into at most one paragraph, emptying the run."""
    text = _paragraph(_inline_text(run, depth))
    run.clear()
    return [text] if text else []


def _flow(children: Iterable[PageElement], depth: int) -> list[str]:
    """Blocks of a node sequence: each run of inline nodes becomes one paragraph."""
    blocks: list[str] = []
    run: list[PageElement] = []
    for child in children:
        if isinstance(child, Tag) and _is_block(child):
            blocks.extend(_flush(run, depth))
            blocks.extend(_block(child, depth + 1))
        else:
            run.append(child)
    blocks.extend(_flush(run, depth))
    return blocks


def _is_block(tag: Tag) -> bool:
    name = tag.name
    if name in ("ac:structured-macro", "ac:macro"):
        return _macro_name(tag) not in _INLINE_MACROS
    return name in _BLOCK_TAGS or name in _CONTAINERS


def _block(tag: Tag, depth: int) -> list[str]:
    """Render one block element as zero or more text blocks."""
    name = tag.name
    if depth > _MAX_DEPTH:
        return [_paragraph(tag.get_text(" "))]
    if name in ("ul", "ol"):
        return [_list(tag, depth)]
    if name == "table":
        return [_table(tag, depth)]
    if name == "pre":
        return [_fence(tag.get_text(), "")]
    if name == "ac:task-list":
        return [_tasks(tag, depth)]
    if name in ("ac:structured-macro", "ac:macro"):
        return _macro(tag, depth)
    if name == "hr" or name in _SKIPPED_TAGS:
        return []
    return _flow(tag.children, depth)


def _inline_text(nodes: Iterable[PageElement], depth: int) -> str:
    """Concatenate the visible text of inline nodes; <br/> becomes a newline."""
    parts: list[str] = []
    for node in nodes:
        if isinstance(node, Tag):
            parts.append(_inline(node, depth + 1))
        elif _is_text(node):
            parts.append(str(node).replace("\r", " ").replace("\n", " "))  # only <br/> breaks a line
    return "".join(parts)


def _inline(tag: Tag, depth: int) -> str:
    name = tag.name
    if depth > _MAX_DEPTH:
        return tag.get_text(" ")
    if name == "br":
        return "\n"
    if name in _SKIPPED_TAGS:
        return ""
    if name == "ac:link":
        return _link(tag, depth)
    if name == "ac:image":
        return f" [Image: {_image_label(tag, depth)}] "
    if name == "ac:emoticon":
        return str(tag.get("ac:emoji-fallback") or f":{tag.get('ac:name', 'emoticon')}:")
    if name == "time":
        return str(tag.get("datetime") or "") + tag.get_text()
    if name == "ri:user":
        return _user(tag)
    if name in ("ac:structured-macro", "ac:macro") and _macro_name(tag) in _INLINE_MACROS:
        return _inline_macro(tag)
    if _is_block(tag):
        return "\n" + "\n".join(_block(tag, depth)) + "\n"
    if name in _SPACED:
        return " " + _inline_text(tag.children, depth) + " "
    return _inline_text(tag.children, depth)


def _link(tag: Tag, depth: int) -> str:
    """A link's own text, else what it points at: page title, file name, @user, space key or URL."""
    for body_name in ("ac:plain-text-link-body", "ac:link-body"):
        link_body = tag.find(body_name)
        if isinstance(link_body, Tag):
            text = _inline_text(link_body.children, depth).strip()
            if text:
                return text
    for child in tag.find_all(True, limit=20):
        if child.name == "ri:user":
            return _user(child)
        for attribute in ("ri:content-title", "ri:filename", "ri:space-key", "ri:value"):
            if child.get(attribute):
                return str(child[attribute])
    return str(tag.get("ac:anchor") or "")


def _user(tag: Tag) -> str:
    """A mention as "@Display Name" when the caller looked the user up; else what the tag itself says
    (Cloud stores only an account id: "@user")."""
    return "@" + str(tag.get(_NAME) or tag.get("ri:username") or tag.get("ri:userkey") or "user")


def _tab_title(tag: Tag) -> str:
    if _macro_name(tag) not in _TAB_MACROS:
        return ""
    params = _params(tag)
    return params.get("title") or params.get("label") or params.get("name") or ""


def _jira(tag: Tag) -> str:
    """A Jira macro: its issue ("Jira PAY-123": Confluence shows the key with Jira's icon, and a reader asking
    "which Jira issue…" names the product), or the JQL of an issue table ("Jira issues: project = PAY")."""
    params = _params(tag)
    if params.get("key"):
        return f"Jira {params['key']}"
    query = params.get("jqlQuery") or params.get("jql")
    if query:
        return f"Jira issues: {query}"
    return params.get("url", "")


def _image_label(tag: Tag, depth: int) -> str:
    caption = tag.find("ac:caption")
    if isinstance(caption, Tag):
        text = _one_line(_inline_text(caption.children, depth))
        if text:
            return text
    for attribute in ("ac:alt", "ac:title"):
        if tag.get(attribute):
            return _one_line(str(tag[attribute]))
    resource = tag.find(["ri:attachment", "ri:url"])
    if isinstance(resource, Tag):
        target = str(resource.get("ri:filename") or resource.get("ri:value") or "")
        return target.rsplit("/", 1)[-1]
    return "image"


def _macro_name(tag: Tag) -> str:
    return str(tag.get("ac:name") or "").lower()


def _params(tag: Tag) -> dict[str, str]:
    """The macro's own parameters (not those of nested macros), as text."""
    params: dict[str, str] = {}
    for child in tag.find_all("ac:parameter", recursive=False):
        params[str(child.get("ac:name") or "")] = _one_line(child.get_text(" "))
    return params


def _body(tag: Tag, name: str) -> Tag:
    found = tag.find(name, recursive=False)
    return found if isinstance(found, Tag) else Tag(name=name)


def _macro(tag: Tag, depth: int) -> list[str]:
    """Render a block macro by kind: code fenced, panels labelled, expand titled, generated ones dropped."""
    name = _macro_name(tag)
    params = _params(tag)
    if name in ("code", "noformat"):
        code = _fence(_body(tag, "ac:plain-text-body").get_text(), params.get("language", ""))
        return [params["title"] + "\n" + code] if params.get("title") else [code]
    if name in _DROPPED_MACROS:
        return []
    if name in ("jira", "jiraissues"):
        return [_jira(tag)]
    if name.startswith("view") or name == "multimedia":
        attachment = tag.find("ri:attachment")
        filename = attachment.get("ri:filename") if isinstance(attachment, Tag) else None
        return [f"[File: {filename}]"] if filename else []
    blocks = _flow(_body(tag, "ac:rich-text-body").children, depth)
    plain = _body(tag, "ac:plain-text-body").get_text()
    if plain.strip():
        text = html.unescape(_TAG.sub(" ", plain)) if name == "html" else plain
        blocks.append(_paragraph(text))
    blocks = [block for block in blocks if block]
    if name in _PANELS:
        text = "\n".join([params["title"], *blocks] if params.get("title") else blocks)
        return [f"{_PANELS[name]}: {text}"] if text else []
    if name == "expand":
        return [params.get("title") or "Expand", *blocks]
    if name in _TAB_MACROS and _tab_title(tag):
        return [_tab_title(tag), *blocks]
    return blocks


def _inline_macro(tag: Tag) -> str:
    if _macro_name(tag) == "status":
        return _params(tag).get("title", "")
    if _macro_name(tag) == "jira":
        return _jira(tag)
    if _macro_name(tag) in _DROPPED_MACROS:
        return ""
    return _body(tag, "ac:rich-text-body").get_text(" ")


def _list(tag: Tag, depth: int) -> str:
    """A (nested) list as "- item" or "1. item" lines; nested content is indented two spaces."""
    lines: list[str] = []
    number = _start(tag)
    for child in tag.children:
        if not isinstance(child, Tag):
            text = _paragraph(str(child)) if _is_text(child) else ""
            lines.extend(_item("-", [text]) if text else [])
        elif child.name in ("ul", "ol"):
            lines.extend("  " + line for line in _list(child, depth + 1).split("\n") if line)
        else:
            marker = f"{number}." if tag.name == "ol" else "-"
            content = _flow(child.children, depth + 1) if child.name == "li" else _block(child, depth)
            item = _item(marker, content)
            number += 1 if item else 0
            lines.extend(item)
    return "\n".join(lines)


def _start(tag: Tag) -> int:
    try:
        return int(str(tag.get("start") or 1))
    except ValueError:
        return 1


def _item(marker: str, blocks: list[str]) -> list[str]:
    lines = [line for block in blocks for line in block.split("\n") if line.strip()]
    if not lines:
        return []
    return [f"{marker} {lines[0]}", *("  " + line for line in lines[1:])]


def _tasks(tag: Tag, depth: int) -> str:
    """An action-item list as "[ ] task" / "[x] task" lines."""
    lines: list[str] = []
    for task in tag.find_all("ac:task", recursive=False):
        status = task.find("ac:task-status")
        done = isinstance(status, Tag) and status.get_text().strip().lower() == "complete"
        lines.extend(_item("[x]" if done else "[ ]", _flow(_body(task, "ac:task-body").children, depth + 1)))
    return "\n".join(lines)


def _table(tag: Tag, depth: int) -> str:
    """One line per row; when the table has a header row every cell is written "Header: value"."""
    rows = [row for row in _grid(tag, depth) if any(cell.text for cell in row)]
    header: dict[int, str] = {}
    if len(rows) > 1 and all(cell.is_header for cell in rows[0]):
        header = {column: cell.text for cell in rows.pop(0) for column in cell.columns}
    return "\n".join(_row_line(row, header) for row in rows)


@dataclass(frozen=True)
class _Cell:
    is_header: bool
    text: str
    columns: range


def _rows(table: Tag) -> Iterator[Tag]:
    for child in table.children:
        if isinstance(child, Tag) and child.name == "tr":
            yield child
        elif isinstance(child, Tag) and child.name in ("thead", "tbody", "tfoot"):
            yield from (row for row in child.find_all("tr", recursive=False))


def _grid(table: Tag, depth: int) -> list[list[_Cell]]:
    """Each row's cells with the columns each covers: colspan widens a cell, rowspan repeats it in the rows
    below (so every value stays under its own header: issue 14's "Env: db2; Host: 6432")."""
    carried: dict[int, tuple[int, _Cell]] = {}  # first column → (rows still to fill, cell)
    grid: list[list[_Cell]] = []
    for row in _rows(table):
        cells: list[_Cell] = []
        column = 0
        for tag in row.find_all(["td", "th"], recursive=False):
            column = _carry(carried, cells, column, only_here=True)
            lines = [line.strip() for block in _flow(tag.children, depth + 1) for line in block.split("\n")]
            span = _span(tag, "colspan")
            cell = _Cell(tag.name == "th", " ".join(line for line in lines if line), range(column, column + span))
            cells.append(cell)
            if _span(tag, "rowspan") > 1:
                carried[column] = (_span(tag, "rowspan") - 1, cell)
            column += span
        _carry(carried, cells, column, only_here=False)
        grid.append(cells)
    return grid


def _carry(carried: dict[int, tuple[int, _Cell]], cells: list[_Cell], column: int, *, only_here: bool) -> int:
    """Place cells spanning down from rows above, at `column` (and right after each other) or, at a row's
    end, wherever they start; returns the next free column."""
    for start in sorted(k for k in carried if k >= column):
        if only_here and start != column:
            break
        left, cell = carried.pop(start)
        cells.append(cell)
        if left > 1:
            carried[start] = (left - 1, cell)
        column = cell.columns.stop
    return column


def _span(cell: Tag, attribute: str) -> int:
    try:
        return min(max(1, int(str(cell.get(attribute) or 1))), 1000)
    except ValueError:
        return 1


def _row_line(row: list[_Cell], header: dict[int, str]) -> str:
    """"Header: value; Header2: value2", or "Row header: value | value" without a header row."""
    parts: list[str] = []
    for cell in row:
        labels = dict.fromkeys(header[c] for c in cell.columns if header.get(c))
        spans_all = len(cell.columns) > 1 and len(cell.columns) >= len(header)
        label = "" if spans_all else " / ".join(labels)
        if cell.text:
            parts.append(f"{label}: {cell.text}" if label and label != cell.text else cell.text)
    if not header and row[0].is_header and row[0].text and len(parts) > 1:
        return f"{parts[0]}: " + " | ".join(parts[1:])
    return ("; " if header else " | ").join(parts)


def _fence(code: str, language: str) -> str:
    """Code as a fenced block; line ends normalised, trailing spaces and blank edges dropped."""
    code = _INVISIBLE.sub("", code.replace("\r\n", "\n").replace("\r", "\n"))
    lines = [line.rstrip() for line in code.split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        return ""
    return "```" + _one_line(language) + "\n" + "\n".join(lines) + "\n```"


def _is_text(node: PageElement) -> bool:
    """Visible text: plain strings and CDATA, not comments, doctypes or processing instructions."""
    if isinstance(node, CData):
        return True
    return isinstance(node, NavigableString) and not isinstance(
        node, Comment | Declaration | Doctype | ProcessingInstruction
    )


def _paragraph(text: str) -> str:
    """Collapse whitespace inside each line, drop empty lines and invisible characters."""
    lines = (" ".join(line.split()) for line in _INVISIBLE.sub("", text).split("\n"))
    return "\n".join(line for line in lines if line)


def _one_line(text: str) -> str:
    return " ".join(_INVISIBLE.sub("", text).split())
