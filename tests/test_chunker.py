"""Sections → chunks: every chunk fits the embedding budget, nothing is lost, and facts keep their context."""

from __future__ import annotations

import hashlib
import itertools
import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.chunker import chunk_sections
from ingest.models import Chunk, Section
from ingest.storage_format import to_sections
from ingest.tokens import TiktokenTokenizer, Tokenizer

SAMPLES = Path(__file__).parent / "samples"
TIKTOKEN = TiktokenTokenizer()


class ByteTokenizer:
    """One token per UTF-8 byte: a second, much stingier tokenizer that only satisfies the protocol."""

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8", "surrogatepass"))

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", "replace")


TOKENIZERS: list[Tokenizer] = [TIKTOKEN, ByteTokenizer()]


def chunk(
    sections: list[Section],
    *,
    max_tokens: int = 256,
    overlap_tokens: int = 32,
    tokenizer: Tokenizer = TIKTOKEN,
) -> list[Chunk]:
    return chunk_sections(sections, title="Deploys", breadcrumb="ENG > Runbooks > Deploys",
                          tokenizer=tokenizer, max_tokens=max_tokens, overlap_tokens=overlap_tokens)


def sample_chunks(name: str, max_tokens: int = 256, tokenizer: Tokenizer = TIKTOKEN) -> list[Chunk]:
    sections = to_sections((SAMPLES / name).read_text(encoding="utf-8"), title="Sample")
    return chunk(sections, max_tokens=max_tokens, tokenizer=tokenizer)


def assert_well_formed(chunks: list[Chunk], *, max_tokens: int, tokenizer: Tokenizer) -> None:
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.token_count == tokenizer.count(c.embed_text) <= max_tokens
        assert c.embed_text.endswith(c.content) and c.content.strip()
        assert c.content_hash == hashlib.sha256(c.embed_text.encode()).hexdigest()


def assert_words_kept(
    sections: list[Section], chunks: list[Chunk], *, max_tokens: int, tokenizer: Tokenizer
) -> None:
    """Every word is in some chunk; only words too long to share a chunk with its header may be cut."""
    contents = "\n".join(c.content for c in chunks)
    for section in sections:
        # CJK sentence ends are cut points even without a space after them.
        for word in re.split(r"[\s。！？；]+", section.text):
            if word and tokenizer.count(" " + word) <= max_tokens // 4:
                assert word in contents, word


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*.xml")))
@pytest.mark.parametrize("max_tokens", [64, 256])
@pytest.mark.parametrize("tokenizer", TOKENIZERS, ids=["tiktoken", "bytes"])
def test_sample_chunks_fit_and_keep_every_word(name: str, max_tokens: int, tokenizer: Tokenizer) -> None:
    sections = to_sections((SAMPLES / name).read_text(encoding="utf-8"), title="Sample")
    chunks = chunk(sections, max_tokens=max_tokens, tokenizer=tokenizer)
    assert_well_formed(chunks, max_tokens=max_tokens, tokenizer=tokenizer)
    assert_words_kept(sections, chunks, max_tokens=max_tokens, tokenizer=tokenizer)


def test_header_names_page_breadcrumb_and_heading_path() -> None:
    chunks = sample_chunks("staging_environment.xml")
    fact = next(c for c in chunks if "rebuilt every Sunday at 02:00 UTC" in c.content)
    header = "Title: Deploys\nPath: ENG > Runbooks > Deploys > Schedule\n\n"
    assert fact.embed_text.startswith(header + "- The staging database is rebuilt")
    assert fact.heading_path == ("Schedule",)
    intro = chunks[0]
    assert intro.embed_text.startswith("Title: Deploys\nPath: ENG > Runbooks > Deploys\n\nStaging mirrors")


def test_split_table_rows_keep_their_headers() -> None:
    rows = "\n".join(f"Service: svc-{n}; Owner: team-{n % 7}; Pager: pd-{n}" for n in range(200))
    chunks = chunk([Section(("Owners",), rows)], max_tokens=96)
    assert len(chunks) > 5
    for c in chunks:
        lines = c.content.split("\n")
        assert all(line.startswith(("Service: ", "Owner: ", "Pager: ")) for line in lines), lines
        assert c.heading_path == ("Owners",)


def test_code_block_splits_at_lines_and_stays_readable() -> None:
    lines = [f"    value_{n} = compute({n})  # step {n}" for n in range(300)]
    code = "```python\n" + "\n".join(lines) + "\n```"
    chunks = chunk([Section(("Script",), code)], max_tokens=128)
    assert_well_formed(chunks, max_tokens=128, tokenizer=TIKTOKEN)
    assert chunks[0].content.startswith("```python\n    value_0 = compute(0)")
    for c in chunks[1:]:
        assert c.content.startswith("    value_"), c.content[:40]  # overlap starts at a line


def test_small_sections_under_one_top_heading_are_merged() -> None:
    sections = [
        Section(("Deploying", "Canary"), "Canary takes 5% of traffic."),
        Section(("Deploying", "Rollout"), "Promote after 15 minutes."),
        Section(("Rolling back",), "Run rollback.sh."),
    ]
    chunks = chunk(sections)
    assert [c.heading_path for c in chunks] == [("Deploying",), ("Rolling back",)]
    assert chunks[0].content == (
        "## Canary\nCanary takes 5% of traffic.\n\n## Rollout\nPromote after 15 minutes."
    )


def test_long_section_pieces_overlap() -> None:
    sentences = [f"Fact number {n} says the port is {8000 + n}." for n in range(200)]
    chunks = chunk([Section(("Ports",), " ".join(sentences))], max_tokens=128, overlap_tokens=24)
    assert len(chunks) > 5
    for before, after in itertools.pairwise(chunks):
        shared = max(k for k in range(len(after.content)) if before.content.endswith(after.content[:k]))
        assert 30 <= shared < len(after.content) // 2, (before.content[-80:], after.content[:80])
        assert after.content.startswith("Fact number ")  # the overlap starts at a sentence
    without_overlap = chunk([Section(("Ports",), " ".join(sentences))], max_tokens=128, overlap_tokens=0)
    assert len(without_overlap) < len(chunks)
    assert sum(len(c.content) for c in without_overlap) <= len(" ".join(sentences))


PATHOLOGICAL = [
    ("one 10k-character word", "x" * 10_000),
    ("base64 blob", "QUJD" * 5_000),
    ("CJK without spaces", "東京都の天気は晴れです。明日は雨が降るでしょう" * 400),
    ("CJK without punctuation", "東京都天気晴明日雨" * 1_000),
    ("emoji", "🎉👩‍👩‍👧‍👦🇩🇪" * 1_000),
    ("emoji words", " ".join(["deploy🚀", "🔥hot"] * 2_000)),
    ("giant code block", "```\n" + "\n".join(" " * (n % 9) + f"call({n});" for n in range(5_000)) + "\n```"),
    ("whitespace runs", ("word" + " " * 500 + "\n" * 50) * 100),
    ("special tokens", "<|endoftext|> <|fim_prefix|> " * 500),
    ("one long line of punctuation", "=-" * 20_000),
]


@pytest.mark.parametrize(("kind", "text"), PATHOLOGICAL, ids=[k for k, _ in PATHOLOGICAL])
@pytest.mark.parametrize("tokenizer", TOKENIZERS, ids=["tiktoken", "bytes"])
def test_pathological_text_stays_within_budget(kind: str, text: str, tokenizer: Tokenizer) -> None:
    chunks = chunk([Section(("Weird", kind), text)], max_tokens=64, overlap_tokens=8, tokenizer=tokenizer)
    assert_well_formed(chunks, max_tokens=64, tokenizer=tokenizer)
    stripped = re.sub(r"\s", "", text)
    covered = "".join(re.sub(r"\s", "", c.content) for c in chunks)
    assert set(stripped) <= set(covered)
    assert len(covered) >= len(stripped)


def test_pathological_title_and_headings_still_leave_room_for_content() -> None:
    sections = [Section(("H" * 5_000, "東京" * 3_000), "The fact survives.")]
    chunks = chunk_sections(sections, title="T" * 5_000, breadcrumb="B > " * 2_000, tokenizer=TIKTOKEN,
                            max_tokens=64, overlap_tokens=8)
    assert_well_formed(chunks, max_tokens=64, tokenizer=TIKTOKEN)
    assert "The fact survives." in "".join(c.content for c in chunks)


@pytest.mark.parametrize("sections", [[], [Section((), "")], [Section(("Empty",), "  \n ")]])
def test_page_without_text_gives_no_chunks(sections: list[Section]) -> None:
    assert chunk(sections) == []


def test_same_sections_give_same_hashes_and_an_edit_changes_only_its_chunk() -> None:
    sections = to_sections((SAMPLES / "runbook_payments_deploy.xml").read_text(encoding="utf-8"), title="R")
    first, second = chunk(sections, max_tokens=128), chunk(sections, max_tokens=128)
    assert [c.content_hash for c in first] == [c.content_hash for c in second]
    edited = [Section(s.heading_path, s.text.replace("2 minutes", "3 minutes")) for s in sections]
    changed = {c.content_hash for c in chunk(edited, max_tokens=128)} - {c.content_hash for c in first}
    assert 1 <= len(changed) <= 2


@pytest.mark.parametrize(("max_tokens", "overlap_tokens"), [(16, 0), (256, -1), (256, 256)])
def test_unusable_budgets_are_refused(max_tokens: int, overlap_tokens: int) -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        chunk([Section((), "text")], max_tokens=max_tokens, overlap_tokens=overlap_tokens)


def test_two_megabyte_page_chunks_in_seconds() -> None:
    paths = sorted(SAMPLES.glob("*.xml"))
    body = "".join(p.read_text(encoding="utf-8") for p in paths if "malformed" not in p.name)
    sections = to_sections(body * (2_000_000 // len(body) + 1), title="Big")
    prose = [Section(("Prose",), " ".join(f"Sentence {n} about deploys." for n in range(60_000)))]
    started = time.perf_counter()
    chunks = chunk(sections, max_tokens=256) + chunk(prose, max_tokens=256)
    assert time.perf_counter() - started < 10
    assert len(chunks) > 1000


_ALPHABET = st.characters(codec="utf-8")  # UTF-8 has no lone surrogates
_WORDS = st.lists(
    st.one_of(st.from_regex(r"[a-z]{1,10}", fullmatch=True), st.text(_ALPHABET, min_size=1, max_size=30)),
    max_size=60,
)
_SECTIONS = st.lists(
    st.builds(
        Section,
        st.lists(st.sampled_from(["Setup", "Deploy", "Rollback", "FAQ"]), max_size=3).map(tuple),
        st.one_of(_WORDS.map(" ".join), _WORDS.map("\n".join), _WORDS.map("\n\n".join), st.text(_ALPHABET)),
    ),
    max_size=8,
)


@settings(deadline=None, max_examples=100)
@given(_SECTIONS, st.integers(min_value=48, max_value=160), st.integers(min_value=0, max_value=40),
       st.sampled_from(TOKENIZERS))
def test_chunks_never_exceed_budget_nor_lose_words(
    sections: list[Section], max_tokens: int, overlap_tokens: int, tokenizer: Tokenizer
) -> None:
    chunks = chunk(sections, max_tokens=max_tokens, overlap_tokens=overlap_tokens, tokenizer=tokenizer)
    assert_well_formed(chunks, max_tokens=max_tokens, tokenizer=tokenizer)
    assert_words_kept(sections, chunks, max_tokens=max_tokens, tokenizer=tokenizer)
    if not any(s.text.strip() for s in sections):
        assert chunks == []


def test_a_blob_that_counts_as_few_word_pieces_is_still_split_into_readable_chunks() -> None:
    from ingest.tokens import CharacterBoundTokenizer, TiktokenTokenizer

    class OneTokenPerWord:
        """Like WordPiece on a 10,000-character word: one [UNK] token however long the word is."""

        def count(self, text: str) -> int:
            return len(text.split())

        def encode(self, text: str) -> list[int]:
            return list(range(self.count(text)))

        def decode(self, ids: list[int]) -> str:
            return ""

    blob = "QUJD" * 2500
    sections = [Section(("Keys",), f"The signing key is {blob} and rotates yearly.")]
    chunks = chunk_sections(
        sections, title="Keys", breadcrumb="Security", tokenizer=CharacterBoundTokenizer(OneTokenPerWord()),
        max_tokens=254, overlap_tokens=16,
    )
    assert len(chunks) > 1 and all(len(c.embed_text) <= 254 * 8 for c in chunks)
    assert TiktokenTokenizer().count("plain prose words") == CharacterBoundTokenizer(TiktokenTokenizer()).count(
        "plain prose words")
