"""Conversion and chunking throughput on the PostgreSQL manual (pure code: no database, no network).

Storage format → sections (ingest.storage_format) → token-bounded chunks (ingest.chunker), with tiktoken
(cl100k, what OpenAIEmbedder counts with) and with all-MiniLM-L6-v2's WordPiece tokenizer (only the
tokenizer is loaded, not the model). Each tokenizer runs with the budget the sync gives it (min(model limit,
SyncOptions.max_chunk_tokens)); tiktoken also runs at MiniLM's budget so the tokenizer's cost can be told
apart from the budget's.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from bench.harness import Stopwatch, append_result, machine_line, prepare_environment, table
from bench.manual import Page, manual_pages
from ingest.chunker import chunk_sections
from ingest.embedders.local import LocalEmbedder
from ingest.embedders.openai import MAX_INPUT_TOKENS
from ingest.models import Section
from ingest.storage_format import to_sections
from ingest.sync import SyncOptions
from ingest.tokens import CharacterBoundTokenizer, TiktokenTokenizer, Tokenizer

OVERLAP_TOKENS = SyncOptions().overlap_tokens
OPENAI_BUDGET = min(MAX_INPUT_TOKENS, SyncOptions().max_chunk_tokens)  # what sync uses with OpenAIEmbedder


@dataclass(frozen=True)
class Throughput:
    step: str
    tokenizer: str
    max_tokens: int | None
    pages: int
    megabytes: float
    seconds: float
    chunks: int
    mean_chunk_tokens: float | None

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.megabytes / self.seconds


def breadcrumbs(pages: Sequence[Page]) -> dict[str, str]:
    """page_id → "Grandparent > Parent > Title", as the sync builds it from Confluence's ancestors."""
    by_title = {p["title"]: p for p in pages}
    crumbs: dict[str, str] = {}
    for page in pages:
        chain = [page["title"]]
        parent = by_title.get(page.get("parent_title") or "")
        while parent is not None and parent["title"] not in chain:
            chain.insert(0, parent["title"])
            parent = by_title.get(parent.get("parent_title") or "")
        crumbs[str(page["page_id"])] = " > ".join(chain)
    return crumbs


def time_conversion(pages: Sequence[Page]) -> tuple[Throughput, list[list[Section]]]:
    megabytes = sum(len(p["body"].encode()) for p in pages) / 1e6
    gc.collect()
    with Stopwatch() as clock:
        converted = [to_sections(p["body"], title=p["title"]) for p in pages]
    return Throughput("convert", "—", None, len(pages), megabytes, clock.seconds, 0, None), converted


def time_chunking(
    pages: Sequence[Page],
    converted: Sequence[list[Section]],
    *,
    name: str,
    tokenizer: Tokenizer,
    max_tokens: int,
) -> Throughput:
    """Convert and chunk every page (conversion time is included: it is what a sync pays per page)."""
    crumbs = breadcrumbs(pages)
    megabytes = sum(len(p["body"].encode()) for p in pages) / 1e6
    chunks = tokens = 0
    gc.collect()
    with Stopwatch() as clock:
        for page in pages:
            sections = to_sections(page["body"], title=page["title"])
            made = chunk_sections(
                sections,
                title=page["title"],
                breadcrumb=crumbs[str(page["page_id"])],
                tokenizer=CharacterBoundTokenizer(tokenizer),  # as ingest.sync.index_page wraps it
                max_tokens=max_tokens,
                overlap_tokens=OVERLAP_TOKENS,
            )
            chunks += len(made)
            tokens += sum(c.token_count for c in made)
    return Throughput(
        "convert + chunk",
        name,
        max_tokens,
        len(pages),
        megabytes,
        clock.seconds,
        chunks,
        tokens / chunks if chunks else None,
    )


def measure(pages: Sequence[Page]) -> tuple[list[Throughput], dict[str, float]]:
    tiktoken = TiktokenTokenizer()
    local = LocalEmbedder()
    load_s: dict[str, float] = {}
    started = time.perf_counter()
    tiktoken.count("warm up")
    load_s["tiktoken cl100k"] = time.perf_counter() - started
    started = time.perf_counter()
    wordpiece = local.tokenizer
    wordpiece.count("warm up")
    minilm_budget = local.max_input_tokens
    load_s["MiniLM WordPiece"] = time.perf_counter() - started
    conversion, converted = time_conversion(pages)
    rows = [conversion]
    for name, tokenizer, budget in (
        ("tiktoken cl100k", tiktoken, OPENAI_BUDGET),
        ("tiktoken cl100k", tiktoken, minilm_budget),
        ("MiniLM WordPiece", wordpiece, minilm_budget),
    ):
        rows.append(time_chunking(pages, converted, name=name, tokenizer=tokenizer, max_tokens=budget))
    return rows, load_s


def report(rows: Sequence[Throughput], load_s: dict[str, float]) -> str:
    first = rows[0]
    title = f"Conversion and chunking: {first.pages} pages, {first.megabytes:.1f} MB of storage format"
    body = table(
        ["step", "tokenizer", "max tokens", "pages/s", "MB/s", "seconds", "chunks", "mean tokens/chunk"],
        [
            [
                r.step,
                r.tokenizer,
                r.max_tokens,
                r.pages_per_s,
                r.mb_per_s,
                r.seconds,
                r.chunks or None,
                r.mean_chunk_tokens,
            ]
            for r in rows
        ],
        title=title,
    )
    loads = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in load_s.items())
    return f"{body}\n(tokenizer load, not timed above: {loads})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.convert", description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=None, help="use only the first N pages of the manual")
    args = parser.parse_args(argv)
    prepare_environment()
    pages = manual_pages()  # the manual not installed: CorpusMissing exits, naming the install command
    pages = pages[: args.pages] if args.pages else pages
    rows, load_s = measure(pages)
    print(machine_line())
    print(report(rows, load_s))
    append_result(
        "convert",
        {
            "rows": [{**asdict(r), "pages_per_s": r.pages_per_s, "mb_per_s": r.mb_per_s} for r in rows],
            "tokenizer_load_s": load_s,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
