"""Text from attached files: PDF, DOCX, PPTX, XLSX, CSV, Markdown, plain text → sections.

Parsing runs in a separate worker process (`python -m ingest.extract KIND`, bytes on stdin, JSON sections on
stdout) with a wall-clock limit and an address-space limit: a corrupt or hostile file (an encrypted PDF, a zip
bomb, a 10,000-page PDF) fails only itself — the worker is killed or dies, the sync reports the file and goes
on. Libraries (each well kept, pure Python, already the common choice for the format):
pypdf (PDF text per page; no native code), python-docx (paragraphs with heading styles, tables),
python-pptx (slide titles, text frames, tables, notes), openpyxl (read-only, cached values of formulas).
They are imported only in the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import sys
import zipfile
from dataclasses import dataclass
from typing import Any

from ingest.models import Section

# File kinds by extension; the media type from Confluence is a fallback (it is often application/octet-stream).
KINDS = {
    ".pdf": "pdf", ".docx": "docx", ".pptx": "pptx", ".xlsx": "xlsx", ".csv": "csv",
    ".md": "markdown", ".markdown": "markdown", ".txt": "text", ".text": "text", ".log": "text",
}
MEDIA_KINDS = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "text/csv": "csv", "text/markdown": "markdown", "text/plain": "text",
}
DEFAULT_TYPES = ("pdf", "docx", "pptx", "xlsx", "csv", "md", "txt")
# Beyond these, a file is cut (reported in its text as cut, not failed): an index needs its words, not all of
# a 10,000-page scan. The time limit still bounds the work done before the cut.
MAX_PDF_PAGES = 2000
MAX_ROWS_PER_SHEET = 20000
MAX_TEXT_CHARS = 5_000_000
# A zip whose members would inflate past this is refused before any parsing (zip bombs).
MAX_UNZIPPED_BYTES = 300 * 1024 * 1024


@dataclass(frozen=True)
class ExtractLimits:
    timeout_s: float = 60.0
    max_memory_mb: int = 1024


class ExtractionFailed(Exception):
    """The file could not be read: the reason is the message (shown in the sync report)."""


def file_kind(filename: str, media_type: str, allowed: tuple[str, ...] = DEFAULT_TYPES) -> str | None:
    """The parser for this file, or None when its type isn't on the allow-list (by extension, e.g. "pdf")."""
    ext = os.path.splitext(filename.lower())[1]
    kind = KINDS.get(ext) or MEDIA_KINDS.get(media_type.split(";")[0].strip().lower())
    if kind is None:
        return None
    names = {ext.lstrip(".") for ext, k in KINDS.items() if k == kind}
    return kind if names & {a.lower().lstrip(".") for a in allowed} else None


async def extract_sections(data: bytes, kind: str, *, limits: ExtractLimits = ExtractLimits()) -> list[Section]:
    """Sections of the file's text, parsed in a worker process under `limits`; ExtractionFailed otherwise."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ingest.extract", kind, str(limits.max_memory_mb),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(data), timeout=limits.timeout_s)
    except TimeoutError:
        raise ExtractionFailed(f"took longer than {limits.timeout_s:g} s") from None
    finally:
        if proc.returncode is None:
            proc.kill()
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()
    code = proc.returncode or 0
    if code != 0:
        reason = err.decode("utf-8", "replace").strip().splitlines()
        last = reason[-1] if reason else f"worker exited with {code}"
        if "MemoryError" in last:
            last = f"ran out of its {limits.max_memory_mb} MB memory limit"
        elif code < 0:
            last = f"worker killed by signal {-code}"
        raise ExtractionFailed(last[:300])
    return [Section(tuple(s["path"]), s["text"]) for s in json.loads(out)]


# ---- the worker side: runs in the child process only -------------------------------------------------------


def _pdf(data: bytes) -> list[Section]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("")  # many "encrypted" PDFs only restrict printing: the user password is empty
        except Exception as err:
            raise ExtractionFailed(f"encrypted PDF ({err})") from None
        if not opened:
            raise ExtractionFailed("encrypted PDF: needs a password")
    sections: list[Section] = []
    total = 0
    for number, page in enumerate(reader.pages, start=1):
        if number > MAX_PDF_PAGES or total > MAX_TEXT_CHARS:
            break
        text = (page.extract_text() or "").strip()
        total += len(text)
        if text:
            sections.append(Section((f"Page {number}",), text))
    return sections


def _check_zip(data: bytes) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile as err:
        raise ExtractionFailed(f"not a valid Office file ({err})") from None
    if inflated > MAX_UNZIPPED_BYTES:
        raise ExtractionFailed(f"unpacks to {inflated // (1 << 20)} MB (zip bomb?); limit "
                               f"{MAX_UNZIPPED_BYTES // (1 << 20)} MB")


def _docx(data: bytes) -> list[Section]:
    from docx import Document

    _check_zip(data)
    document = Document(io.BytesIO(data))
    sections: list[Section] = []
    headings: list[tuple[int, str]] = []
    lines: list[str] = []

    def close() -> None:
        if lines:
            sections.append(Section(tuple(h for _, h in headings), "\n".join(lines)))
            lines.clear()

    for paragraph in document.paragraphs:
        text = paragraph.text.strip()
        style = (paragraph.style.name if paragraph.style is not None else "") or ""
        if text and style.startswith("Heading"):
            close()
            level = int(style.split()[-1]) if style.split()[-1].isdigit() else 1
            while headings and headings[-1][0] >= level:
                headings.pop()
            headings.append((level, text))
        elif text:
            lines.append(text)
    close()
    for table in document.tables:
        rows = [[cell.text.strip() for cell in row.cells] for row in table.rows]
        if rows:
            sections.append(Section(("Table",), _rows_text(rows)))
    return sections


def _pptx(data: bytes) -> list[Section]:
    from pptx import Presentation

    _check_zip(data)
    deck = Presentation(io.BytesIO(data))
    sections: list[Section] = []
    for number, slide in enumerate(deck.slides, start=1):
        title_shape = slide.shapes.title
        title = title_shape.text_frame.text.strip() if title_shape is not None and title_shape.has_text_frame else ""
        lines: list[str] = []
        for shape in slide.shapes:
            if title_shape is not None and shape.shape_id == title_shape.shape_id:
                continue  # python-pptx hands out a new proxy per access: compare ids, not objects
            if shape.has_text_frame:
                lines.extend(p.strip() for p in shape.text_frame.text.split("\n") if p.strip())
            if getattr(shape, "has_table", False) and shape.has_table:
                rows = [[cell.text.strip() for cell in row.cells] for row in shape.table.rows]
                lines.append(_rows_text(rows))
        if slide.has_notes_slide:
            notes = slide.notes_slide.notes_text_frame.text.strip() if slide.notes_slide.notes_text_frame else ""
            if notes:
                lines.append(f"Notes: {notes}")
        heading = f"Slide {number}: {title}" if title else f"Slide {number}"
        if lines or title:
            sections.append(Section((heading,), "\n".join(lines)))
    return sections


def _xlsx(data: bytes) -> list[Section]:
    from openpyxl import load_workbook

    _check_zip(data)
    book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    sections: list[Section] = []
    for sheet in book.worksheets:
        rows: list[list[str]] = []
        for row in sheet.iter_rows(values_only=True):
            if len(rows) >= MAX_ROWS_PER_SHEET:
                break
            cells = ["" if v is None else str(v).strip() for v in row]
            if any(cells):
                rows.append(cells)
        if rows:
            sections.append(Section((f"Sheet {sheet.title}",), _rows_text(rows)))
    book.close()
    return sections


def _csv(data: bytes) -> list[Section]:
    text = _decode(data)
    rows = [row for row in csv.reader(io.StringIO(text)) if any(c.strip() for c in row)][:MAX_ROWS_PER_SHEET]
    return [Section((), _rows_text([[c.strip() for c in row] for row in rows]))] if rows else []


def _rows_text(rows: list[list[str]]) -> str:
    """A table as one line per row, each value under its column header ("Header: value; …"), as pages are."""
    header, body = rows[0], rows[1:]
    if not body or not all(header):
        return "\n".join(" | ".join(c for c in row if c) for row in rows)
    return "\n".join(
        "; ".join(f"{header[i]}: {value}" if i < len(header) else value for i, value in enumerate(row) if value)
        for row in body
    )


def _markdown(data: bytes) -> list[Section]:
    sections: list[Section] = []
    headings: list[tuple[int, str]] = []
    lines: list[str] = []
    fenced = False

    def close() -> None:
        text = "\n".join(lines).strip()
        if text:
            sections.append(Section(tuple(h for _, h in headings), text))
        lines.clear()

    for line in _decode(data).splitlines():
        if line.startswith("```"):
            fenced = not fenced
        stripped = line.lstrip()
        if not fenced and stripped.startswith("#") and stripped.lstrip("#").startswith(" "):
            close()
            level = len(stripped) - len(stripped.lstrip("#"))
            while headings and headings[-1][0] >= level:
                headings.pop()
            headings.append((level, stripped.lstrip("#").strip()))
        else:
            lines.append(line.rstrip())
    close()
    return sections


def _text(data: bytes) -> list[Section]:
    text = _decode(data).strip()
    return [Section((), text)] if text else []


def _decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "utf-16") if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ("utf-8-sig",):
        try:
            return data.decode(encoding)[:MAX_TEXT_CHARS]
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")[:MAX_TEXT_CHARS]


_PARSERS = {"pdf": _pdf, "docx": _docx, "pptx": _pptx, "xlsx": _xlsx, "csv": _csv, "markdown": _markdown,
            "text": _text}


def _worker(kind: str, max_memory_mb: int) -> int:
    try:
        import resource

        limit = max_memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):  # not on this platform: the time limit still holds
        pass
    data = sys.stdin.buffer.read()
    try:
        sections = _PARSERS[kind](data)
    except ExtractionFailed as err:
        print(str(err), file=sys.stderr)
        return 3
    except MemoryError:
        print("MemoryError", file=sys.stderr)
        return 4
    except Exception as err:  # whatever a parser raises on a corrupt file: one line for the report
        print(f"unreadable {kind} file: {type(err).__name__}: {err}"[:300].replace("\n", " "), file=sys.stderr)
        return 3
    out: list[dict[str, Any]] = [{"path": list(s.heading_path), "text": s.text} for s in sections]
    sys.stdout.write(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1], int(sys.argv[2])))
