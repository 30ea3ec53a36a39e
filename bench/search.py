"""Hybrid retrieval latency and HNSW recall at 10k and 100k chunks (384 dimensions).

Data: the manual's real chunks with their all-MiniLM-L6-v2 vectors (read from the retrieval benchmark's
cached database; without it, the manual is chunked here and embedded with the emulator's hashed bag of
words), topped up with synthetic filler — unit vectors near real ones and text drawn from the manual's
vocabulary. Rows are bulk-loaded (COPY into a staging table, one INSERT … SELECT computing tsvectors) and
the HNSW index is built after the load, with the migration's own DDL.

Measured per size, 200 queries (the 152 benchmark questions + page titles), after a warm-up:
latency p50/p95/p99 of db.search.hybrid_candidates (production, HNSW), of the same with the vector leg
exact (`SET LOCAL enable_indexscan = off`), and of the vector leg alone (HNSW / db.search.exact_nearest);
recall@10 of HNSW against exact at the production ef_search (db.search.EF_SEARCH) and at 40, 100, 200.
Targets: p95 ≤ 50 ms at 100k on this machine, recall@10 ≥ 0.95.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import os
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from bench import retrieval
from bench.convert import breadcrumbs
from bench.harness import Stopwatch, append_result, bench_database, machine_line, prepare_environment, table
from bench.manual import manual_pages
from bot.answering.ranking import keyword_query
from db.connect import open_database
from db.search import (
    DISTINCTIVE_MAX_SHARE,
    DISTINCTIVE_MIN_CHUNKS,
    EF_SEARCH,
    HYBRID_CANDIDATES,
    SET_SEARCH_PARAMETERS,
    exact_nearest,
    hybrid_candidates,
    refresh_lexeme_stats,
)
from ingest.chunker import chunk_sections
from ingest.storage_format import to_sections

DIMENSION = 384
SIZES = (10_000, 100_000)
QUERY_COUNT = 200
WARMUP_QUERIES = 20
EF_SWEEP = (40, 100, 200)
P95_TARGET_MS, RECALL_TARGET = 50.0, 0.95
FILLER_CHUNKS_PER_PAGE = 10
MAINTENANCE_WORK_MEM = "2GB"

CREATE_STAGING = """
CREATE UNLOGGED TABLE staging (
    page_id text, space_key text, chunk_index integer, heading_path text[], content text, content_hash text,
    token_count integer, embedding vector(384), title text
)
"""
STAGING_COLUMNS = (
    "page_id",
    "space_key",
    "chunk_index",
    "heading_path",
    "content",
    "content_hash",
    "token_count",
    "embedding",
    "title",
)
INSERT_SPACE = "INSERT INTO spaces (space_key, name) VALUES ('PG', 'PostgreSQL Manual') ON CONFLICT DO NOTHING"
INSERT_PAGE = """
INSERT INTO pages (page_id, space_key, title, url, version, checksum) VALUES ($1, $2, $3, $4, 1, 'bench')
ON CONFLICT (page_id) DO NOTHING
"""
# The same tsvector as db/pages.py INSERT_CHUNK, computed in bulk.
STAGING_TO_CHUNKS = """
INSERT INTO chunks (page_id, space_key, chunk_index, heading_path, content, content_hash, token_count,
                    embedding, tsv)
SELECT page_id, space_key, chunk_index, heading_path, content, content_hash, token_count, embedding,
       setweight(to_tsvector('english', title), 'A')
       || setweight(to_tsvector('english', array_to_string(heading_path, ' ')), 'B')
       || to_tsvector('english', content)
  FROM staging
"""
DROP_HNSW = "DROP INDEX IF EXISTS chunks_embedding_hnsw_idx"
CREATE_HNSW = "CREATE INDEX chunks_embedding_hnsw_idx ON chunks USING hnsw (embedding vector_cosine_ops)"
HNSW_TOP = "SELECT id FROM chunks ORDER BY embedding <=> $1 LIMIT $2"
# The production keyword leg (db/search.py): only the question's distinctive lexemes, OR-ed.
DISTINCTIVE_QUERY = f"""
SELECT string_agg(quote_literal(term.lexeme), ' | ')::tsquery
  FROM unnest(tsvector_to_array(to_tsvector('english', $1))) AS term(lexeme)
  JOIN lexeme_stats stats ON stats.lexeme = term.lexeme
 WHERE stats.ndoc <= greatest({DISTINCTIVE_MIN_CHUNKS}, {DISTINCTIVE_MAX_SHARE} * (SELECT chunks FROM search_stats))
"""
KEYWORD_LEG = f"""
SELECT id FROM chunks, ({DISTINCTIVE_QUERY}) AS distinctive(query)
 WHERE query IS NOT NULL AND tsv @@ query ORDER BY ts_rank_cd(tsv, query) DESC, id LIMIT $2
"""
KEYWORD_MATCHES = f"""
SELECT count(*) FROM chunks, ({DISTINCTIVE_QUERY}) AS distinctive(query) WHERE query IS NOT NULL AND tsv @@ query
"""
SET_HNSW = """
SELECT set_config('hnsw.ef_search', $1, true), set_config('hnsw.iterative_scan', 'relaxed_order', true),
       set_config('enable_seqscan', 'off', true)
"""


@dataclass(frozen=True)
class SourceChunk:
    page_id: str
    title: str
    heading_path: list[str]
    content: str
    embedding: np.ndarray


@dataclass(frozen=True)
class Source:
    chunks: list[SourceChunk]
    queries: list[str]
    query_vectors: list[np.ndarray]
    vectors_from: str


# ---- source data ----------------------------------------------------------------------------------------


async def cached_chunks() -> list[SourceChunk]:
    """The manual's chunks and MiniLM vectors from bench.retrieval's cache ([] when there is none)."""
    external = os.environ.get("DATABASE_URL")
    if not external and not (retrieval.DB_DIR / "pgdata").exists():
        return []
    async with bench_database(retrieval.DATABASE, data_dir=None if external else retrieval.DB_DIR, keep=True) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            if await conn.fetchval("SELECT to_regclass('chunks')") is None:
                return []
            await conn.set_type_codec("vector", encoder=str, decoder=_parse_vector, format="text")
            rows = await conn.fetch(
                "SELECT c.page_id, p.title, c.heading_path, c.content, c.embedding FROM chunks c "
                "JOIN pages p USING (page_id) ORDER BY c.id"
            )
        finally:
            await conn.close()
    return [SourceChunk(r["page_id"], r["title"], list(r["heading_path"]), r["content"], r["embedding"]) for r in rows]


def _parse_vector(text: str) -> np.ndarray:
    return np.array([float(x) for x in text.strip("[]").split(",")], dtype=np.float32)


def hashed_chunks() -> list[SourceChunk]:
    """Fallback: chunk the manual with MiniLM's tokenizer, embed with the emulator's hashed bag of words."""
    from ingest.embedders.local import LocalEmbedder
    from tests.emulators.openai import embed_text

    local = LocalEmbedder()
    pages = manual_pages()
    crumbs = breadcrumbs(pages)
    out = []
    for page in pages:
        sections = to_sections(page["body"], title=page["title"])
        for c in chunk_sections(
            sections,
            title=page["title"],
            breadcrumb=crumbs[str(page["page_id"])],
            tokenizer=local.tokenizer,
            max_tokens=local.max_input_tokens,
            overlap_tokens=32,
        ):
            vector = np.array(embed_text(c.embed_text, DIMENSION), dtype=np.float32)
            out.append(SourceChunk(str(page["page_id"]), page["title"], list(c.heading_path), c.content, vector))
    return out


def query_texts(chunks: Sequence[SourceChunk], count: int, rng: random.Random) -> list[str]:
    """The benchmark questions, then page titles as short search-box queries, up to `count`."""
    questions = [q.text for q in retrieval.read_questions()]
    titles = sorted({c.title for c in chunks})
    return (questions + rng.sample(titles, max(0, count - len(questions))))[:count]


async def load_source(rng: random.Random) -> Source:
    chunks = await cached_chunks()
    if chunks:
        from ingest.embedders.local import LocalEmbedder

        queries = query_texts(chunks, QUERY_COUNT, rng)
        embedder = LocalEmbedder()
        vectors = [np.array(v, dtype=np.float32) for v in await embedder.embed(queries)]
        await embedder.aclose()
        return Source(chunks, queries, vectors, "all-MiniLM-L6-v2 (bench.retrieval's cache)")
    from tests.emulators.openai import embed_text

    chunks = hashed_chunks()
    queries = query_texts(chunks, QUERY_COUNT, rng)
    vectors = [np.array(embed_text(q, DIMENSION), dtype=np.float32) for q in queries]
    note = "hashed bag of words (no retrieval cache: run python -m bench.retrieval for MiniLM vectors)"
    return Source(chunks, queries, vectors, note)


# ---- synthetic filler (pure) ----------------------------------------------------------------------------


def filler_vectors(real: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors near random real ones: cosine to their origin mostly between ~0.75 and ~0.95."""
    origins = real[rng.integers(0, len(real), size=count)]
    scale = rng.uniform(0.015, 0.045, size=(count, 1)).astype(np.float32)
    noisy = origins + rng.normal(0.0, 1.0, size=origins.shape).astype(np.float32) * scale
    unit: np.ndarray = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)
    return unit


def filler_texts(vocabulary: Sequence[str], count: int, rng: random.Random, words: int = 120) -> list[str]:
    return [" ".join(rng.choices(vocabulary, k=words)) for _ in range(count)]


def word_stream(chunks: Sequence[SourceChunk], limit: int = 2_000_000) -> list[str]:
    """The manual's words with their real frequencies, so filler postings lists are Zipf-shaped too."""
    words: list[str] = []
    for chunk in chunks:
        words.extend(w.lower() for w in chunk.content.split() if w.isalpha())
        if len(words) >= limit:
            break
    return words


# ---- loading --------------------------------------------------------------------------------------------


async def load_rows(conn: asyncpg.Connection, records: list[tuple[Any, ...]], pages: dict[str, str]) -> None:
    """Pages first (chunks reference them), then chunks via COPY into staging and one INSERT … SELECT."""
    await conn.execute(INSERT_SPACE)
    await conn.executemany(INSERT_PAGE, [(pid, "PG", title, f"https://wiki/{pid}") for pid, title in pages.items()])
    await conn.execute("DROP TABLE IF EXISTS staging")
    await conn.execute(CREATE_STAGING)
    await conn.copy_records_to_table("staging", records=records, columns=STAGING_COLUMNS)
    await conn.execute(STAGING_TO_CHUNKS)
    await conn.execute("DROP TABLE staging")


def real_records(chunks: Sequence[SourceChunk], start: int, end: int) -> tuple[list[tuple[Any, ...]], dict[str, str]]:
    """Rows for chunks[start:end]; chunk indexes count over the whole list so later slices don't collide."""
    records: list[tuple[Any, ...]] = []
    pages: dict[str, str] = {}
    index: dict[str, int] = {}
    for n, c in enumerate(chunks[:end]):
        index[c.page_id] = index.get(c.page_id, -1) + 1
        if n >= start:
            records.append(
                (
                    c.page_id,
                    "PG",
                    index[c.page_id],
                    c.heading_path,
                    c.content,
                    f"real-{n}",
                    len(c.content) // 4,
                    c.embedding,
                    c.title,
                )
            )
            pages[c.page_id] = c.title
    return records, pages


def filler_records(source: Source, count: int, start: int, seed: int) -> tuple[list[tuple[Any, ...]], dict[str, str]]:
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    real = np.stack([c.embedding for c in source.chunks])
    vectors = filler_vectors(real, count, nrng)
    texts = filler_texts(word_stream(source.chunks), count, rng)
    records, pages = [], {}
    for i in range(count):
        page_id = f"filler-{(start + i) // FILLER_CHUNKS_PER_PAGE}"
        title = f"Filler page {(start + i) // FILLER_CHUNKS_PER_PAGE}"
        pages[page_id] = title
        records.append(
            (
                page_id,
                "PG",
                (start + i) % FILLER_CHUNKS_PER_PAGE,
                ["Filler"],
                texts[i],
                f"filler-{start + i}",
                160,
                vectors[i],
                title,
            )
        )
    return records, pages


async def build_index(conn: asyncpg.Connection) -> float:
    with Stopwatch() as clock:
        await conn.execute(f"SET maintenance_work_mem = '{MAINTENANCE_WORK_MEM}'")  # a constant
        await conn.execute("SET max_parallel_maintenance_workers = 1")  # 2 cores: leader + one worker
        await conn.execute(CREATE_HNSW)
        await conn.execute("VACUUM ANALYZE chunks")
        await refresh_lexeme_stats(conn)  # what a sync does after changing chunks
    return clock.seconds


# ---- measuring ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    size: int
    method: str
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float


@dataclass(frozen=True)
class Recall:
    size: int
    ef_search: int
    recall_at_10: float
    min_recall: float
    p95_ms: float


def percentiles(size: int, method: str, samples_s: Sequence[float]) -> Latency:
    ms = np.array(samples_s) * 1000
    return Latency(
        size,
        method,
        float(np.percentile(ms, 50)),
        float(np.percentile(ms, 95)),
        float(np.percentile(ms, 99)),
        float(ms.mean()),
    )


async def timed(queries: Sequence[Any], call: Callable[[Any], Awaitable[Any]]) -> tuple[list[Any], list[float]]:
    """Each query's answer and seconds, after a warm-up on the first few."""
    for query in queries[:WARMUP_QUERIES]:
        await call(query)
    answers, samples = [], []
    for query in queries:
        started = time.perf_counter()
        answers.append(await call(query))
        samples.append(time.perf_counter() - started)
    return answers, samples


async def hnsw_top(conn: asyncpg.Connection, vector: np.ndarray, ef_search: int, k: int = 10) -> list[int]:
    async with conn.transaction():
        await conn.execute(SET_HNSW, str(ef_search))
        return [r["id"] for r in await conn.fetch(HNSW_TOP, vector, k)]


async def hybrid_exact(conn: asyncpg.Connection, vector: np.ndarray, keywords: str) -> object:
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_indexscan = off")
        return await hybrid_candidates(conn, vector, keywords)


async def keyword_leg(conn: asyncpg.Connection, keywords: str) -> list[int]:
    return [r["id"] for r in await conn.fetch(KEYWORD_LEG, keywords, 40)]


async def production_plan(conn: asyncpg.Connection, vector: np.ndarray, keywords: str) -> str:
    """EXPLAIN of the production hybrid query with the settings and parameters hybrid_candidates uses."""
    async with conn.transaction():
        await conn.execute(SET_SEARCH_PARAMETERS, str(EF_SEARCH))
        rows = await conn.fetch("EXPLAIN " + HYBRID_CANDIDATES, vector, None, 40, keywords,
                                DISTINCTIVE_MIN_CHUNKS, DISTINCTIVE_MAX_SHARE)
    return "\n".join(r[0] for r in rows)


@dataclass(frozen=True)
class SizeMeasure:
    latencies: list[Latency]
    recalls: list[Recall]
    keyword_matches_p50: float
    keyword_matches_p95: float
    plan_uses_hnsw: bool


async def measure_size(conn: asyncpg.Connection, size: int, source: Source) -> SizeMeasure:
    keywords = [keyword_query(q) for q in source.queries]
    pairs = list(zip(source.query_vectors, keywords, strict=True))
    vectors = source.query_vectors
    _, hybrid_s = await timed(pairs, lambda p: hybrid_candidates(conn, p[0], p[1]))
    _, hybrid_exact_s = await timed(pairs, lambda p: hybrid_exact(conn, p[0], p[1]))
    _, keyword_s = await timed(keywords, lambda k: keyword_leg(conn, k))
    _, vector_only_s = await timed(vectors, lambda v: hybrid_candidates(conn, v, ""))
    _, hnsw_s = await timed(vectors, lambda v: hnsw_top(conn, v, EF_SEARCH))
    exact, exact_s = await timed(vectors, lambda v: exact_nearest(conn, v))
    latencies = [
        percentiles(size, "hybrid, HNSW (production)", hybrid_s),
        percentiles(size, "hybrid, exact vector leg", hybrid_exact_s),
        percentiles(size, "keyword leg alone (top 40)", keyword_s),
        percentiles(size, "hybrid_candidates, keyword ''", vector_only_s),
        percentiles(size, f"vector top-10, HNSW ef={EF_SEARCH}", hnsw_s),
        percentiles(size, "vector top-10, exact", exact_s),
    ]
    matches = [int(await conn.fetchval(KEYWORD_MATCHES, k)) for k in keywords]
    plan = await production_plan(conn, vectors[0], keywords[0])
    truth = [set(ids) for ids in exact]
    recalls = []
    for ef in sorted({EF_SEARCH, *EF_SWEEP}):
        found, samples = await timed(vectors, functools.partial(hnsw_top, conn, ef_search=ef))
        per_query = [len(t & set(f)) / 10 for t, f in zip(truth, found, strict=True)]
        recalls.append(
            Recall(
                size,
                ef,
                float(np.mean(per_query)),
                float(np.min(per_query)),
                float(np.percentile(np.array(samples) * 1000, 95)),
            )
        )
    return SizeMeasure(
        latencies,
        recalls,
        float(np.percentile(matches, 50)),
        float(np.percentile(matches, 95)),
        "chunks_embedding_hnsw_idx" in plan,
    )


@dataclass(frozen=True)
class SizeSetup:
    size: int
    load_s: float
    index_s: float
    plan_uses_hnsw: bool = False
    keyword_matches_p50: float = 0.0
    keyword_matches_p95: float = 0.0


@dataclass(frozen=True)
class SearchResult:
    vectors_from: str
    real_chunks: int
    setups: list[SizeSetup]
    latencies: list[Latency]
    recalls: list[Recall]
    total_s: float


async def load_size(conn: asyncpg.Connection, source: Source, *, loaded: int, size: int, seed: int) -> SizeSetup:
    """Grow the table from `loaded` to `size` chunks (real ones first, then filler) and rebuild the index."""
    with Stopwatch() as clock:
        await conn.execute(DROP_HNSW)
        real_end = min(size, len(source.chunks))
        records, pages = real_records(source.chunks, min(loaded, real_end), real_end)
        filler_start = max(0, loaded - len(source.chunks))
        filler, filler_pages = filler_records(source, size - loaded - len(records), filler_start, seed + size)
        await load_rows(conn, records + filler, {**pages, **filler_pages})
    index_s = await build_index(conn)
    print(f"  {size:,} chunks: load {clock.seconds:.0f} s, index {index_s:.0f} s", file=sys.stderr, flush=True)
    return SizeSetup(size, clock.seconds, index_s)


async def run(sizes: Sequence[int], *, seed: int = 7) -> SearchResult:
    started = time.perf_counter()
    source = await load_source(random.Random(seed))
    setups: list[SizeSetup] = []
    latencies: list[Latency] = []
    recalls: list[Recall] = []
    async with bench_database("askdocs_bench_search") as dsn:
        with tempfile.TemporaryDirectory(prefix="askdocs-bench-") as data_dir:
            database = await open_database(
                dsn, data_dir=Path(data_dir), embedding_model="bench-384", embedding_dimension=DIMENSION
            )
            try:
                async with database.pool.acquire() as conn:
                    loaded = 0
                    for size in sorted(sizes):
                        setups.append(await load_size(conn, source, loaded=loaded, size=size, seed=seed))
                        loaded = size
                        measured = await measure_size(conn, size, source)
                        setups[-1] = dataclasses.replace(
                            setups[-1],
                            plan_uses_hnsw=measured.plan_uses_hnsw,
                            keyword_matches_p50=measured.keyword_matches_p50,
                            keyword_matches_p95=measured.keyword_matches_p95,
                        )
                        latencies += measured.latencies
                        recalls += measured.recalls
            finally:
                await database.close()
    return SearchResult(
        source.vectors_from, len(source.chunks), setups, latencies, recalls, time.perf_counter() - started
    )


# ---- report ---------------------------------------------------------------------------------------------


def report(result: SearchResult) -> str:
    setup = table(
        ["chunks", "bulk load s", "HNSW build s", "hybrid plan uses HNSW", "keyword matches p50", "p95"],
        [
            [
                s.size,
                s.load_s,
                s.index_s,
                "yes" if s.plan_uses_hnsw else "no",
                s.keyword_matches_p50,
                s.keyword_matches_p95,
            ]
            for s in result.setups
        ],
        title=f"Search: 384-dim vectors from {result.vectors_from}; {result.real_chunks:,} real chunks, "
        f"the rest synthetic; {QUERY_COUNT} queries",
    )
    latency = table(
        ["chunks", "method", "p50 ms", "p95 ms", "p99 ms", "mean ms"],
        [[x.size, x.method, x.p50_ms, x.p95_ms, x.p99_ms, x.mean_ms] for x in result.latencies],
        title="Latency (client-side, one connection, includes the round trip)",
    )
    recall = table(
        ["chunks", "ef_search", "recall@10", "worst query", "p95 ms"],
        [
            [
                r.size,
                f"{r.ef_search}{' (production)' if r.ef_search == EF_SEARCH else ''}",
                r.recall_at_10,
                r.min_recall,
                r.p95_ms,
            ]
            for r in result.recalls
        ],
        title="HNSW recall@10 against exact search",
    )
    checks = []
    biggest = max(s.size for s in result.setups)
    production = next(x for x in result.latencies if x.size == biggest and "production" in x.method)
    prod_recall = next(r for r in result.recalls if r.size == biggest and r.ef_search == EF_SEARCH)
    checks.append(
        [
            f"hybrid p95 at {biggest:,} chunks",
            f"≤ {P95_TARGET_MS:.0f} ms",
            production.p95_ms,
            "met" if production.p95_ms <= P95_TARGET_MS else "MISSED",
        ]
    )
    checks.append(
        [
            f"recall@10 at {biggest:,}, ef_search={EF_SEARCH}",
            f"≥ {RECALL_TARGET}",
            prod_recall.recall_at_10,
            "met" if prod_recall.recall_at_10 >= RECALL_TARGET else "MISSED",
        ]
    )
    targets = table(["target", "limit", "measured", "status"], checks, title="Targets")
    return "\n\n".join([setup, latency, recall, targets, f"total run time {result.total_s:.0f} s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    args = parser.parse_args(argv)
    prepare_environment()
    result = asyncio.run(run(args.sizes))  # the manual not installed: CorpusMissing exits, naming the install command
    print(machine_line())
    print(report(result))
    append_result(
        "search",
        {
            "vectors_from": result.vectors_from,
            "real_chunks": result.real_chunks,
            "setups": [asdict(s) for s in result.setups],
            "latencies": [asdict(x) for x in result.latencies],
            "recalls": [asdict(r) for r in result.recalls],
            "total_s": result.total_s,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
