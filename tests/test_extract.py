"""Attachment text extraction in its worker process: every supported format, and hostile files that must fail
alone, quickly, with a reason."""

from __future__ import annotations

import time

import pytest

from ingest.extract import ExtractionFailed, ExtractLimits, extract_sections, file_kind
from tests import files


def joined(sections: list) -> str:  # type: ignore[type-arg]
    return "\n".join(" > ".join(s.heading_path) + ": " + s.text for s in sections)


@pytest.mark.parametrize(
    ("data", "kind", "expected"),
    [
        (files.pdf(["Hotel stays are reimbursed", "up to 180 euros per night."], ["Second page text."]), "pdf",
         ["Page 1: Hotel stays are reimbursed", "180 euros per night", "Page 2: Second page text."]),
        (files.docx("Laptop", "New hires receive a ThinkPad on day one."), "docx",
         ["Laptop: New hires receive a ThinkPad on day one."]),
        (files.pptx("Q3 goals", "Launch the Lisbon data center in September."), "pptx",
         ["Slide 1: Q3 goals: Launch the Lisbon data center in September."]),
        (files.xlsx([["Team", "Budget"], ["Payments", 42000], ["Search", 17000]]), "xlsx",
         ["Sheet Budget: Team: Payments; Budget: 42000\nTeam: Search; Budget: 17000"]),
        (b"Team,Budget\nPayments,42000\n", "csv", ["Team: Payments; Budget: 42000"]),
        (b"# Setup\nRun make.\n## Deep\nDeeper text.\n", "markdown",
         ["Setup: Run make.", "Setup > Deep: Deeper text."]),
        ("Plain text, ünïcode.".encode(), "text", ["Plain text, ünïcode."]),
    ],
)
async def test_each_format_becomes_sections(data: bytes, kind: str, expected: list[str]) -> None:
    text = joined(await extract_sections(data, kind))
    for part in expected:
        assert part in text


@pytest.mark.parametrize(
    ("data", "kind", "reason"),
    [
        (files.encrypted_pdf(["secret"]), "pdf", "encrypted PDF"),
        (files.corrupt_pdf(), "pdf", "unreadable pdf file"),
        (files.zip_bomb_docx(), "docx", "zip bomb"),
        (b"not a zip at all", "xlsx", "not a valid Office file"),
    ],
)
async def test_hostile_files_fail_alone_with_a_reason(data: bytes, kind: str, reason: str) -> None:
    with pytest.raises(ExtractionFailed, match=reason):
        await extract_sections(data, kind)


async def test_a_huge_pdf_is_stopped_by_the_time_limit() -> None:
    huge = files.pdf(*[[f"Page {i} of a very long scan."] for i in range(10_000)])
    started = time.monotonic()
    with pytest.raises(ExtractionFailed, match="took longer than 1 s"):
        await extract_sections(huge, "pdf", limits=ExtractLimits(timeout_s=1))
    assert time.monotonic() - started < 5  # the worker was killed, not waited for


async def test_memory_limit_fails_the_file_not_the_sync() -> None:
    with pytest.raises(ExtractionFailed, match="memory limit"):
        await extract_sections(b"x" * (300 << 20), "text", limits=ExtractLimits(max_memory_mb=200))


def test_allow_list_by_extension_then_media_type() -> None:
    assert file_kind("Report.PDF", "application/octet-stream") == "pdf"
    assert file_kind("notes", "text/markdown") == "markdown"
    assert file_kind("photo.png", "image/png") is None
    assert file_kind("deck.pptx", "", ("pdf",)) is None
