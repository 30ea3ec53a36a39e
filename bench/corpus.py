"""Turn the PostgreSQL manual's DocBook HTML into Confluence storage-format pages.

Real documentation that nobody here wrote makes an honest corpus: ~1,170 pages with tables, code,
admonitions and cross-links, shaped like a wiki space (titles, parents, labels). `iter_manual_pages` reads a
directory of the HTML (Debian: postgresql-doc-15); `convert_page` is pure.
CLI: ``python -m bench.corpus --out bench/.cache/pg-manual.jsonl [--demo-out bot/demo/pages.jsonl]``.

Each page is ``{"page_id", "title", "parent_title", "labels", "body"}``. Titles lose the manual's
section numbers ("25.1. Routine Vacuuming" -> "Routine Vacuuming"); a title that occurs more than once gets
its parent's title in parentheses ("Overview (Parallel Query)") so every title is unique, as Confluence
requires within a space.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lxml.html
from lxml.html import HtmlElement

DEFAULT_HTML_DIR = Path("/usr/share/doc/postgresql-doc-15/html")
# The A-Z keyword index: thousands of links into other pages and no prose of its own.
SKIPPED_FILES = frozenset({"bookindex.html"})
# DocBook admonition -> Confluence macro (info is blue, tip green, note yellow, warning red).
ADMONITIONS = {"note": "info", "tip": "tip", "caution": "note", "important": "note", "warning": "warning"}
CONTAINER_KINDS = frozenset({"part", "reference", "chapter", "appendix", "preface"})
BLOCK_TAGS = frozenset({"div", "p", "pre", "ul", "ol", "dl", "table", "blockquote", "hr",
                        "h1", "h2", "h3", "h4", "h5", "h6", "address"})
NUMBERING = re.compile(r"^(?:(?:Chapter|Part|Appendix)\s+)?[0-9A-Z]+(?:\.[0-9]+)*\.\s+")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)
TAG = re.compile(r"<[^>]+>")
SPACE = re.compile(r"\s+")
SHELL_COMMANDS = frozenset({
    "$", "#", "%", "make", "gmake", "cc", "gcc", "su", "sudo", "cd", "export", "tar", "echo", "initdb",
    "createdb", "dropdb", "psql", "pg_ctl", "pg_dump", "pg_dumpall", "pg_restore", "pg_basebackup", "pgbench",
    "postgres", "sysctl", "chown", "mkdir", "ln", "if", "meson",
})
C_LIKE = re.compile(
    r"^(?:#include|typedef\b|struct\b|PG_FUNCTION_INFO_V1|(?:static\s+|const\s+|extern\s+)*"
    r"(?:void|int|char|bool|Datum|Oid|PGresult|PGconn|[A-Z][a-z]+[A-Z]\w*)\b[\s*]+\w+\s*\()",
    re.M,
)


@dataclass(frozen=True)
class SourcePage:
    """What the cheap first pass learns about one HTML file: enough to resolve links, parents and titles."""

    file_name: str
    raw_title: str
    up: str | None
    next: str | None
    kind: str


def clean_title(raw: str) -> str:
    """Drop the manual's numbering: "Chapter 25. Routine Database Maintenance Tasks" -> "Routine ..."."""
    return NUMBERING.sub("", SPACE.sub(" ", raw).strip())


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


def _attr(text: str) -> str:
    return html.escape(text, quote=True)


def _cdata(text: str) -> str:
    # "]]>" cannot appear inside CDATA: close the section after "]]" and open a new one for ">".
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _classes(el: HtmlElement) -> set[str]:
    return set((el.get("class") or "").split())


def _text(el: HtmlElement) -> str:
    return SPACE.sub(" ", el.text_content()).strip()


def read_source_page(path: Path) -> SourcePage:
    """Read title, Up/Next links and the top-level DocBook element of one file (regex: parsing is slower)."""
    raw = path.read_text(encoding="utf-8")
    title = re.search(r"<title>(.*?)</title>", raw, re.S)
    up = re.search(r'<a accesskey="u" href="([^"#]+)', raw)
    nxt = re.search(r'<link rel="next" href="([^"#]+)', raw)
    kind = re.search(r'<body[^>]*>(?:<div class="navheader">.*?</div>)?<div class="(\w+)"', raw, re.S)
    return SourcePage(
        file_name=path.name,
        raw_title=html.unescape(TAG.sub("", title.group(1))) if title else path.stem,
        up=up.group(1) if up else None,
        next=nxt.group(1) if nxt else None,
        kind=kind.group(1) if kind else "unknown",
    )


def unique_titles(sources: list[SourcePage]) -> dict[str, str]:
    """file name -> page title, unique as Confluence requires within a space.

    Of pages sharing a title, the one highest in the hierarchy keeps it bare ("PREPARE" the SQL command, not
    the ECPG one); the others get their parent's title in parentheses, or their grandparent's when the parent
    has the same title ("Database Roles (Server Administration)" for the first section of "Database Roles").
    """
    by_file = {s.file_name: s for s in sources}
    clean = {s.file_name: clean_title(s.raw_title) for s in sources}

    def depth(s: SourcePage) -> int:
        seen: set[str] = set()
        while s.up in by_file and s.file_name not in seen:
            seen.add(s.file_name)
            s = by_file[s.up]
        return len(seen)

    groups: dict[str, list[SourcePage]] = {}
    for s in sources:
        groups.setdefault(clean[s.file_name], []).append(s)
    titles: dict[str, str] = {}
    for title, group in groups.items():
        depths = [depth(s) for s in group]
        bare = [s for s, d in zip(group, depths, strict=True) if d == min(depths)]
        for s in group:
            if len(group) == 1 or (len(bare) == 1 and s is bare[0]):
                titles[s.file_name] = title
                continue
            up = s.up if s.up in by_file else None
            while up is not None and clean[up] == title:
                up = by_file[up].up if by_file[up].up in by_file else None
            titles[s.file_name] = f"{title} ({clean[up]})" if up else title
    counts = Counter(titles.values())
    for name, title in titles.items():
        if counts[title] > 1:  # still ambiguous: the file's own name is unique
            titles[name] = f"{title} [{Path(name).stem}]"
    return titles


def page_id(file_name: str) -> str:
    """A stable numeric id (Confluence ids are digit strings) that survives reordering of the manual."""
    return str(100_000_000 + int(hashlib.sha1(file_name.encode()).hexdigest()[:12], 16) % 900_000_000)


class _Converter:
    """One page's DocBook XHTML -> storage format. Holds the page's own name and the link targets."""

    def __init__(self, file_name: str, titles: dict[str, str]) -> None:
        self._file_name = file_name
        self._titles = titles
        self._title_level: int | None = None
        self._offset = 1
        self._level = 1  # the storage-format level of the latest heading written

    def convert(self, root: HtmlElement) -> str:
        body = root.find("body")
        if body is None:
            return ""
        main = next((c for c in body if c.tag == "div" and "navheader" not in _classes(c)), None)
        if main is not None and "refentry" in _classes(main):
            self._offset = 2  # refentry subsections are h2 like the page title itself
        return "".join(self._blocks(body))

    # ---- blocks ----------------------------------------
    def _blocks(self, el: HtmlElement, skip: frozenset[HtmlElement] = frozenset()) -> list[str]:
        out: list[str] = []
        run: list[str] = []

        def flush() -> None:
            para = "".join(run).strip()
            run.clear()
            if TAG.sub("", para).strip() or "<ac:image" in para:
                out.append(f"<p>{para}</p>")

        if el.text:
            run.append(_esc(SPACE.sub(" ", el.text)))
        for child in el:
            if isinstance(child.tag, str) and child not in skip:
                if child.tag in BLOCK_TAGS:
                    flush()
                    out.extend(self._block(child))
                else:
                    run.append(self._inline(child))
            if child.tail:
                run.append(_esc(SPACE.sub(" ", child.tail)))
        flush()
        return out

    def _block(self, el: HtmlElement) -> list[str]:
        tag, classes = el.tag, _classes(el)
        if tag == "div":
            if classes & {"navheader", "navfooter", "list-of-tables", "list-of-figures", "list-of-examples"}:
                return []
            if "toc" in classes:
                return self._toc(el)
            if "titlepage" in classes:
                return self._titlepage(el)
            if "refnamediv" in classes:  # the h2 repeats the page title; keep "VACUUM — garbage-collect ..."
                for h in el.iter("h1", "h2", "h3"):
                    self._heading(h)
                return [f"<p>{self._inline_children(p)}</p>" for p in el if p.tag == "p"]
            if classes & ADMONITIONS.keys():
                return [self._admonition(el, ADMONITIONS[next(iter(classes & ADMONITIONS.keys()))])]
            if classes & {"table", "informaltable", "example", "figure", "informalexample", "informalfigure"}:
                return self._captioned(el)
            if "cmdsynopsis" in classes:
                return [self._code(el.text_content().strip(), "bash")]
            if "mediaobject" in classes:
                return [f"<p>{img}</p>" for img in (self._image(c) for c in el.iter("img", "object")) if img]
            return self._blocks(el)
        if tag in {"h1", "h2", "h3", "h4", "h5", "h6"}:
            return self._heading(el)
        if tag == "pre":
            return [self._code(el.text_content().strip("\n").rstrip(), self._language(el))]
        if tag in {"ul", "ol"}:
            items = "".join(f"<li>{self._cell(li)}</li>" for li in el if li.tag == "li")
            return [f"<{tag}>{items}</{tag}>"] if items else []
        if tag == "dl":
            return self._definitions(el)
        if tag == "table":
            return self._table(el)
        if tag == "blockquote":
            return [f"<blockquote>{''.join(self._blocks(el))}</blockquote>"]
        if tag == "hr":
            return []
        return self._blocks(el)

    def _heading(self, el: HtmlElement) -> list[str]:
        level = int(el.tag[1])
        if self._title_level is None:  # the first heading is the page title, which Confluence shows itself
            self._title_level = level
            return []
        text = clean_title(_text(el))
        if not text:
            return []
        self._level = min(6, max(1, level - self._title_level + self._offset))
        return [f"<h{self._level}>{_esc(text)}</h{self._level}>"]

    def _titlepage(self, el: HtmlElement) -> list[str]:
        out: list[str] = []
        for h in el.iter("h1", "h2", "h3", "h4", "h5", "h6"):
            if "title" in _classes(h) or self._title_level is None:
                out.extend(self._heading(h))
        return out

    def _toc(self, el: HtmlElement) -> list[str]:
        """A chapter's table of contents becomes a list of links to its child pages; in-page ones go."""
        dl = next(el.iter("dl"), None)
        if dl is None:
            return []
        items: list[str] = []
        for dt in (c for c in dl if c.tag == "dt"):
            link = next(dt.iter("a"), None)
            target = (link.get("href") or "").split("#")[0] if link is not None else ""
            if link is None or target in ("", self._file_name) or target not in self._titles:
                continue
            purpose = "".join(_text(s) for s in dt.iter("span") if "refpurpose" in _classes(s))
            suffix = _esc(" " + purpose) if purpose else ""
            items.append(f"<li>{self._page_link(target, self._titles[target])}{suffix}</li>")
        return [f"<ul>{''.join(items)}</ul>"] if items else []

    def _admonition(self, el: HtmlElement, macro: str) -> str:
        title = next((c for c in el if c.tag in {"h1", "h2", "h3", "h4", "h5", "h6"}), None)
        param = ""
        if title is not None and _text(title).lower() not in ADMONITIONS:
            param = f'<ac:parameter ac:name="title">{_esc(_text(title))}</ac:parameter>'
        skip = frozenset({title}) if title is not None else frozenset()
        body = "".join(self._blocks(el, skip))
        return (f'<ac:structured-macro ac:name="{macro}">{param}'
                f"<ac:rich-text-body>{body}</ac:rich-text-body></ac:structured-macro>")

    def _captioned(self, el: HtmlElement) -> list[str]:
        """Tables, examples, figures: the caption as a bold paragraph, then the contents."""
        caption = next((c for c in el if c.tag == "p" and "title" in _classes(c)), None)
        out = [f"<p><strong>{_esc(_text(caption))}</strong></p>"] if caption is not None else []
        return out + self._blocks(el, frozenset({caption}) if caption is not None else frozenset())

    def _definitions(self, el: HtmlElement) -> list[str]:
        """DocBook variable lists: the term as a bold paragraph, its definition below.

        A configuration parameter (its term's id starts with GUC-) gets a heading instead, one level below the
        section it sits in, so "Memory > work_mem (integer)" becomes the heading path of its text.
        """
        out: list[str] = []
        for child in el:
            if child.tag == "dt" and (child.get("id") or "").startswith("GUC-"):
                level = min(6, self._level + 1)
                out.append(f"<h{level}>{_esc(_text(child))}</h{level}>")
            elif child.tag == "dt":
                term = self._inline_children(child).strip()
                if TAG.sub("", term).strip():
                    out.append(f"<p><strong>{term}</strong></p>")
            elif child.tag == "dd":
                out.extend(self._blocks(child))
        return out

    def _table(self, el: HtmlElement) -> list[str]:
        if "simplelist" in _classes(el):  # a layout table holding a plain list of words
            cells = [c for c in el.iter("td") if _text(c)]
            return [f"<ul>{''.join(f'<li>{self._inline_children(c).strip()}</li>' for c in cells)}</ul>"]
        rows: list[str] = []
        sections = [c for c in el if c.tag in {"thead", "tbody", "tfoot"}] or [el]
        for tr in (r for section in sections for r in section if r.tag == "tr"):
            header = tr.getparent().tag == "thead"
            cells = []
            for cell in (c for c in tr if c.tag in {"td", "th"}):
                name = "th" if header or cell.tag == "th" else "td"
                span = "".join(f' {a}="{_attr(cell.get(a))}"' for a in ("colspan", "rowspan") if cell.get(a))
                cells.append(f"<{name}{span}>{self._cell(cell)}</{name}>")
            rows.append(f"<tr>{''.join(cells)}</tr>")
        return [f"<table><tbody>{''.join(rows)}</tbody></table>"] if rows else []

    def _cell(self, el: HtmlElement) -> str:
        """List items and table cells: inline content as is, block content as paragraphs."""
        if any(isinstance(c.tag, str) and c.tag in BLOCK_TAGS for c in el):
            blocks = self._blocks(el)
            if len(blocks) == 1 and blocks[0].startswith("<p>"):
                return blocks[0][3:-4]
            return "".join(blocks)
        return self._inline_children(el).strip()

    def _code(self, text: str, language: str) -> str:
        return (f'<ac:structured-macro ac:name="code">'
                f'<ac:parameter ac:name="language">{language}</ac:parameter>'
                f"<ac:plain-text-body>{_cdata(text)}</ac:plain-text-body></ac:structured-macro>")

    @staticmethod
    def _language(pre: HtmlElement) -> str:
        """A best guess for the code macro's language: shell sessions, C, SQL, or plain output."""
        text = pre.text_content().strip()
        first = (text.split() or [""])[0]
        if first in SHELL_COMMANDS or first.endswith("$") or first.startswith(("./", "/usr/", "PGDATA")):
            return "bash"
        if re.fullmatch(r"\w*=[>#]", first) or re.fullmatch(r"[A-Z]{2,}[;(]?", first):
            return "sql"
        if C_LIKE.search(text) and "CREATE " not in text:
            return "c"
        return "text" if "screen" in _classes(pre) else "sql"

    # ---- inline ----------------------------------------
    def _inline_children(self, el: HtmlElement, in_code: bool = False) -> str:
        parts = [_esc(SPACE.sub(" ", el.text))] if el.text else []
        for child in el:
            if isinstance(child.tag, str):
                parts.append(self._inline(child, in_code))
            if child.tail:
                parts.append(_esc(SPACE.sub(" ", child.tail)))
        return "".join(parts)

    def _inline(self, el: HtmlElement, in_code: bool = False) -> str:
        tag = el.tag
        if tag in {"code", "tt", "kbd", "samp"}:
            inner = self._inline_children(el, in_code=True)
            return inner if in_code or not inner.strip() else f"<code>{inner}</code>"
        if tag in {"em", "i", "cite", "dfn", "var", "strong", "b", "sup", "sub", "u"}:
            name = {"i": "em", "cite": "em", "dfn": "em", "var": "em", "b": "strong"}.get(tag, tag)
            inner = self._inline_children(el, in_code)
            return f"<{name}>{inner}</{name}>" if inner.strip() else inner
        if tag == "br":
            return "<br/>"
        if tag in {"img", "object"}:
            return self._image(el)
        if tag == "a":
            return self._anchor(el, in_code)
        return self._inline_children(el, in_code)

    def _anchor(self, el: HtmlElement, in_code: bool) -> str:
        href = el.get("href")
        if href is None:
            return "" if "indexterm" in _classes(el) else self._inline_children(el, in_code)
        if EXTERNAL.match(href):
            return f'<a href="{_attr(href)}">{self._inline_children(el, in_code)}</a>'
        target = href.split("#")[0]
        if target in ("", self._file_name) or target not in self._titles:
            return self._inline_children(el, in_code)
        return self._page_link(target, _text(el) or self._titles[target])

    def _page_link(self, target: str, text: str) -> str:
        return (f'<ac:link><ri:page ri:content-title="{_attr(self._titles[target])}"/>'
                f"<ac:plain-text-link-body>{_cdata(text)}</ac:plain-text-link-body></ac:link>")

    @staticmethod
    def _image(el: HtmlElement) -> str:
        name = el.get("src") or el.get("data")
        if not name or EXTERNAL.match(name):
            return ""
        return f'<ac:image><ri:attachment ri:filename="{_attr(Path(name).name)}"/></ac:image>'


def convert_page(source: bytes, *, file_name: str, titles: dict[str, str]) -> str:
    """One manual page's HTML -> storage-format body; links resolve through `titles` (file name -> title)."""
    root = lxml.html.document_fromstring(source)
    return _Converter(file_name, titles).convert(root)


def _document_order(sources: dict[str, SourcePage]) -> list[SourcePage]:
    """Follow the manual's Next links from the front page, so every parent comes before its children."""
    ordered: list[SourcePage] = []
    seen: set[str] = set()
    name: str | None = "index.html"
    while name in sources and name not in seen:
        seen.add(name)
        ordered.append(sources[name])
        name = sources[name].next
    return ordered + [s for n, s in sorted(sources.items()) if n not in seen]


def _labels(source: SourcePage, sources: dict[str, SourcePage], titles: dict[str, str]) -> list[str]:
    """Labels name the part and chapter a page sits in (or is), outermost first."""
    chain: list[SourcePage] = []
    node: SourcePage | None = source
    while node is not None and node not in chain:
        chain.append(node)
        node = sources.get(node.up) if node.up else None
    return [slug(clean_title(n.raw_title)) for n in reversed(chain) if n.kind in CONTAINER_KINDS]


def iter_manual_pages(html_dir: Path) -> Iterator[dict[str, object]]:
    """Yield every page of the manual in `html_dir` as a Confluence-like page, parents before children."""
    paths = sorted(p for p in html_dir.glob("*.html") if p.name not in SKIPPED_FILES)
    sources = {p.name: read_source_page(p) for p in paths}
    ordered = _document_order(sources)
    titles = unique_titles(ordered)
    front = "index.html" if "index.html" in sources else None
    for source in ordered:
        # The legal notice has no navigation header: hang it, like anything without an Up link, off the front.
        up = source.up if source.up in titles else (front if source.file_name != front else None)
        yield {
            "page_id": page_id(source.file_name),
            "title": titles[source.file_name],
            "parent_title": titles[up] if up else None,
            "labels": _labels(source, sources, titles),
            "body": convert_page((html_dir / source.file_name).read_bytes(),
                                 file_name=source.file_name, titles=titles),
        }


# The demo space (bot/demo/pages.jsonl): what a newcomer asks about, with every ancestor so breadcrumbs work.
DEMO_TITLES = (
    "PostgreSQL 15.20 Documentation",
    "The SQL Language",
    "Data Definition", "Privileges", "Schemas", "Table Partitioning",
    "Data Types", "JSON Types", "Date/Time Types",
    "Indexes", "Introduction (Indexes)", "Index Types", "Partial Indexes",
    "Index-Only Scans and Covering Indexes",
    "Full Text Search", "Introduction (Full Text Search)", "Tables and Indexes", "Controlling Text Search",
    "Concurrency Control", "Transaction Isolation", "Explicit Locking",
    "Performance Tips", "Using EXPLAIN", "Populating a Database",
    "Server Administration",
    "Server Configuration", "Setting Parameters", "Connections and Authentication", "Resource Consumption",
    "Automatic Vacuuming", "Client Connection Defaults",
    "Client Authentication", "The pg_hba.conf File",
    "Database Roles", "Database Roles (Server Administration)", "Role Attributes", "Role Membership",
    "Predefined Roles",
    "Routine Database Maintenance Tasks", "Routine Vacuuming", "Routine Reindexing",
    "Backup and Restore", "SQL Dump", "File System Level Backup",
    "Continuous Archiving and Point-in-Time Recovery (PITR)",
    "High Availability, Load Balancing, and Replication", "Log-Shipping Standby Servers", "Failover",
    "Hot Standby",
    "Reference",
    "SQL Commands", "VACUUM", "EXPLAIN", "CREATE INDEX", "GRANT", "ALTER SYSTEM",
    "PostgreSQL Client Applications", "pg_dump", "pg_restore",
)
_LINK = re.compile(
    r'<ac:link><ri:page ri:content-title="([^"]*)"/>'
    r"<ac:plain-text-link-body><!\[CDATA\[(.*?)\]\]></ac:plain-text-link-body></ac:link>",
    re.S,
)


def subset_space(pages: list[dict[str, object]], titles: tuple[str, ...]) -> list[dict[str, object]]:
    """Keep the pages named in `titles`; links to pages left out become plain text, child lists lose them."""
    keep = set(titles)
    chosen = [p for p in pages if p["title"] in keep]
    missing = keep - {p["title"] for p in chosen}
    if missing:
        raise ValueError(f"not in the corpus: {sorted(missing)}")

    def unlink(match: re.Match[str]) -> str:
        if html.unescape(match.group(1)) in keep:
            return match.group(0)
        return _esc(match.group(2).replace("]]]]><![CDATA[>", "]]>"))

    out = []
    for page in chosen:
        body = str(page["body"])
        # A chapter's list of child pages: drop the entries for pages that are not in the subset.
        body = re.sub(r'<li><ac:link><ri:page ri:content-title="([^"]*)"/>(?:(?!</li>).)*</li>',
                      lambda m: m.group(0) if html.unescape(m.group(1)) in keep else "", body, flags=re.S)
        body = _LINK.sub(unlink, body.replace("<ul></ul>", ""))
        parent = page["parent_title"] if page["parent_title"] in keep else None
        out.append({**page, "parent_title": parent, "body": body})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.corpus", description=__doc__.splitlines()[0])
    parser.add_argument("--html-dir", type=Path, default=DEFAULT_HTML_DIR,
                        help="the manual's HTML (Debian package postgresql-doc-15)")
    parser.add_argument("--out", type=Path, default=Path("bench/.cache/pg-manual.jsonl"))
    parser.add_argument("--demo-out", type=Path, help="also write the demo space (DEMO_TITLES) here")
    args = parser.parse_args(argv)
    if not (args.html_dir / "index.html").exists():
        print(f"no manual at {args.html_dir}: apt-get install postgresql-doc-15", file=sys.stderr)
        return 1
    started = time.perf_counter()
    pages = list(iter_manual_pages(args.html_dir))
    _write_jsonl(args.out, pages)
    elapsed_s = time.perf_counter() - started
    print(f"{len(pages)} pages, {args.out.stat().st_size / 1e6:.1f} MB -> {args.out} in {elapsed_s:.1f} s",
          file=sys.stderr)
    if args.demo_out:
        demo = subset_space(pages, DEMO_TITLES)
        _write_jsonl(args.demo_out, demo)
        size_mb = args.demo_out.stat().st_size / 1e6
        print(f"{len(demo)} pages, {size_mb:.2f} MB -> {args.demo_out}", file=sys.stderr)
    return 0


def _write_jsonl(path: Path, pages: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for page in pages:
            out.write(json.dumps(page, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    sys.exit(main())
