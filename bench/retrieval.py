"""Retrieval quality on the PostgreSQL manual with the real local model (all-MiniLM-L6-v2).

The manual is synced through the product's path (ConfluenceEmulator → SyncRunner → LocalEmbedder, chunks
sized with MiniLM's own tokenizer) into a database cached in bench/.cache/, so a rerun only re-lists the
space. For each of the 136 answerable questions, db.search.hybrid_candidates runs once (40 per leg, as the
answer engine asks) and its candidates are ranked three ways: by vector_rank alone, by keyword_rank alone,
and by bot.answering.ranking.rank (the production fusion). A hit is a chunk of any answer page in the ranked list of
distinct pages: hit@1, hit@5 and MRR@10. The 16 unanswerable questions test the refusal rule of
bot/services.py (evidence_policy("all-MiniLM-L6-v2") with bot.answering.ranking.has_enough_evidence).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import CACHE_DIR, append_result, bench_database, machine_line, prepare_environment, table
from bench.manual import SPACE_KEY, Page, manual_pages, serve_pages
from bot.answering.evidence import EvidencePolicy, evidence_policy, has_enough_evidence, top_similarity
from bot.answering.ranking import RankingPolicy, keyword_query, rank
from bot.demo.confluence import SampleConfluence as ConfluenceEmulator
from bot.operations.sync_runner import RunOutcome
from bot.services import Services, build_services
from bot.settings import Settings, load_settings
from db.models import SearchHit
from db.search import hybrid_candidates
from ingest.embedders.local import LocalEmbedder
from ingest.sync import Progress

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "bench" / "data" / "retrieval_questions.jsonl"
CHUNKING_CODE = ("ingest/storage_format.py", "ingest/chunker.py", "ingest/tokens.py")
DB_DIR = CACHE_DIR / "retrieval-pg"
DATABASE = "askdocs_bench_retrieval"
EMAIL, TOKEN = "bench@example.com", "bench-confluence-token"
MODEL = "all-MiniLM-L6-v2"
CANDIDATES_PER_LEG = 40  # AnswerEngine's candidates_per_leg
MRR_DEPTH = 10
KEYWORD_WEIGHTS = (0.0, 0.01, 0.1, 0.3)


@dataclass(frozen=True)
class Question:
    text: str
    answer_titles: tuple[str, ...]


def read_questions(path: Path = QUESTIONS) -> list[Question]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Question(r["question"], tuple(r.get("answer_titles") or ())) for r in rows]


def choose_pages(pages: Sequence[Page], questions: Sequence[Question], limit: int | None) -> list[Page]:
    """All pages, or the pages the questions cite plus the first others up to `limit` (document order)."""
    if limit is None or limit >= len(pages):
        return list(pages)
    cited = {t for q in questions for t in q.answer_titles}
    chosen = [p for p in pages if p["title"] in cited]
    others = [p for p in pages if p["title"] not in cited][: max(0, limit - len(chosen))]
    keep = {p["page_id"] for p in chosen + others}
    return [p for p in pages if p["page_id"] in keep]


def corpus_fingerprint(pages: Sequence[Page]) -> str:
    """Changes with the corpus and with the code that turns pages into chunks (the cache is rebuilt then:
    an incremental sync would not re-chunk pages whose version is unchanged)."""
    digest = hashlib.sha256()
    for module in CHUNKING_CODE:
        digest.update((ROOT / module).read_bytes())
    for page in pages:
        digest.update(f"{page['page_id']}\0{page['title']}\0{page['body']}\0".encode())
    return digest.hexdigest()[:16]


# ---- metrics (pure) -------------------------------------------------------------------------------------


def distinct_pages(ordered: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(ordered))


def by_leg(candidates: Sequence[SearchHit], leg: str) -> list[str]:
    """Page ids in the order of one leg's rank (candidates that leg didn't find are left out)."""
    ranked = [c for c in candidates if getattr(c, leg) is not None]
    ranked.sort(key=lambda c: (getattr(c, leg), c.chunk_id))
    return distinct_pages([c.page_id for c in ranked])


def by_fusion(candidates: Sequence[SearchHit], now: datetime, policy: RankingPolicy = RankingPolicy()) -> list[str]:
    """Page ids in bot.answering.ranking.rank's order; top_k is opened up so the list is deep enough for hit@5/MRR
    (the per-page cap and the order of the first pages are production's)."""
    policy = dataclasses.replace(policy, top_k=max(len(candidates), 1))
    return distinct_pages([h.page_id for h in rank(candidates, policy=policy, now=now)])


def first_hit(pages: Sequence[str], answers: set[str]) -> int | None:
    return next((i for i, page in enumerate(pages, start=1) if page in answers), None)


@dataclass(frozen=True)
class Quality:
    method: str
    hit_at_1: float
    hit_at_5: float
    mrr: float
    no_result: int  # questions this method returned no page for


def quality(method: str, rankings: Sequence[tuple[list[str], set[str]]]) -> Quality:
    ranks = [first_hit(pages, answers) for pages, answers in rankings]
    n = len(ranks)
    return Quality(
        method=method,
        hit_at_1=sum(r == 1 for r in ranks) / n,
        hit_at_5=sum(r is not None and r <= 5 for r in ranks) / n,
        mrr=sum(1 / r for r in ranks if r is not None and r <= MRR_DEPTH) / n,
        no_result=sum(not pages for pages, _ in rankings),
    )


# ---- sync and search ------------------------------------------------------------------------------------


async def sync_manual(services: Services) -> RunOutcome:
    started = time.monotonic()

    async def progress(run_id: int, step: Progress) -> None:
        if step.done % 100 == 0 or step.done == step.total:
            rate = step.done / max(time.monotonic() - started, 1e-9)
            print(f"  synced {step.done}/{step.total} pages ({rate:.1f} pages/s)", file=sys.stderr, flush=True)

    outcome = await services.sync.run(spaces=[SPACE_KEY], trigger="cli", requested_by="bench", progress=progress)
    if not isinstance(outcome, RunOutcome) or outcome.status != "succeeded":
        raise RuntimeError(f"sync did not succeed: {outcome}")
    return outcome


@dataclass(frozen=True)
class Searched:
    question: Question
    answers: set[str]
    candidates: list[SearchHit]


async def search_all(services: Services, questions: Sequence[Question]) -> list[Searched]:
    async with services.database.pool.acquire() as conn:
        ids = {r["title"]: r["page_id"] for r in await conn.fetch("SELECT title, page_id FROM pages")}
    vectors = await services.embedder.embed([q.text for q in questions])
    out = []
    async with services.database.pool.acquire() as conn:
        for question, vector in zip(questions, vectors, strict=True):
            candidates = await hybrid_candidates(conn, vector, keyword_query(question.text), limit=CANDIDATES_PER_LEG)
            answers = {ids[t] for t in question.answer_titles if t in ids}
            out.append(Searched(question, answers, candidates))
    return out


@dataclass(frozen=True)
class Refusals:
    policy: EvidencePolicy
    unanswerable: int
    refused_unanswerable: int
    answerable: int
    refused_answerable: int
    answerable_similarity: list[float]
    unanswerable_similarity: list[float]

    @property
    def refusal_rate(self) -> float:
        return self.refused_unanswerable / self.unanswerable if self.unanswerable else 0.0

    @property
    def false_refusal_rate(self) -> float:
        return self.refused_answerable / self.answerable if self.answerable else 0.0


def refusals(searched: Sequence[Searched], policy: EvidencePolicy, now: datetime) -> Refusals:
    """The production decision: rank() with the production policy, then has_enough_evidence()."""
    counts = {True: [0, 0], False: [0, 0]}  # answerable → [asked, refused]
    similarity: dict[bool, list[float]] = {True: [], False: []}
    for s in searched:
        answerable = bool(s.question.answer_titles)
        hits = rank(s.candidates, policy=RankingPolicy(), now=now)
        counts[answerable][0] += 1
        counts[answerable][1] += not has_enough_evidence(s.question.text, hits, policy)
        similarity[answerable].append(top_similarity(hits) or 0.0)
    return Refusals(
        policy,
        counts[False][0],
        counts[False][1],
        counts[True][0],
        counts[True][1],
        similarity[True],
        similarity[False],
    )


def weight_sweep(searched: Sequence[Searched], now: datetime) -> list[Quality]:
    """The fusion with the keyword leg weighted down (bot.answering.ranking.RankingPolicy.keyword_weight)."""
    out = []
    for weight in KEYWORD_WEIGHTS:
        policy = RankingPolicy(keyword_weight=weight)
        rankings = [(by_fusion(s.candidates, now, policy), s.answers) for s in searched]
        out.append(quality(f"hybrid, keyword_weight={weight}", rankings))
    return out


def policy_sweep(searched: Sequence[Searched], now: datetime, production: Refusals) -> list[Refusals]:
    """Nearby evidence policies: first those at least as good as production on both rates (most refusals of
    unanswerable questions, then fewest false refusals), then the rest."""
    results = []
    for refuse_below in (0.30, 0.35, 0.40, 0.45):
        for confident_above in (0.45, 0.50, 0.55, 0.60):
            for coverage in (0.5, 0.6, 0.7):
                policy = EvidencePolicy(refuse_below, confident_above, coverage)
                results.append(refusals(searched, policy, now))

    def dominates(r: Refusals) -> bool:
        return r.refusal_rate >= production.refusal_rate and r.false_refusal_rate <= production.false_refusal_rate

    results.sort(key=lambda r: (not dominates(r), -r.refusal_rate, r.false_refusal_rate))
    return results


# ---- the run --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrievalResult:
    pages: int
    chunks: int
    sync_s: float
    sync_chunks_embedded: int
    qualities: list[Quality]
    weights: list[Quality]
    refusal: Refusals
    sweep: list[Refusals]
    missing_titles: list[str]


async def evaluate(pages: Sequence[Page], questions: Sequence[Question], dsn: str) -> RetrievalResult:
    embedder = LocalEmbedder()
    async with ConfluenceEmulator(email=EMAIL, api_token=TOKEN) as confluence:
        serve_pages(confluence, pages)
        assert confluence.base_url is not None
        settings = manual_settings(dsn, confluence.base_url)
        async with build_services(settings, embedder=embedder) as services:
            started = time.monotonic()
            outcome = await sync_manual(services)
            sync_s = time.monotonic() - started
            async with services.database.pool.acquire() as conn:
                chunks = int(await conn.fetchval("SELECT count(*) FROM chunks"))
                titles = {r["title"] for r in await conn.fetch("SELECT title FROM pages")}
            searched = await search_all(services, questions)
    now = datetime.now(UTC)
    answerable = [s for s in searched if s.question.answer_titles]
    qualities = [
        quality("vector only", [(by_leg(s.candidates, "vector_rank"), s.answers) for s in answerable]),
        quality("keyword only", [(by_leg(s.candidates, "keyword_rank"), s.answers) for s in answerable]),
        quality("hybrid (rank)", [(by_fusion(s.candidates, now), s.answers) for s in answerable]),
    ]
    missing = sorted({t for q in questions for t in q.answer_titles if t not in titles})
    production = refusals(searched, evidence_policy(MODEL), now)
    return RetrievalResult(
        pages=len(pages),
        chunks=chunks,
        sync_s=sync_s,
        sync_chunks_embedded=outcome.report.chunks_embedded,
        qualities=qualities,
        weights=weight_sweep(answerable, now),
        refusal=production,
        sweep=policy_sweep(searched, now, production)[:5],
        missing_titles=missing,
    )


def report(result: RetrievalResult, questions: Sequence[Question], *, scope: str = "the full manual") -> str:
    answerable = sum(bool(q.answer_titles) for q in questions)
    header = (
        f"Retrieval quality: {result.pages} pages ({scope}), {result.chunks:,} chunks, {MODEL}; "
        f"{answerable} answerable questions"
    )
    if result.sync_chunks_embedded:
        rate = result.sync_chunks_embedded / result.sync_s
        header += (
            f"\n(sync this run: {result.sync_chunks_embedded:,} chunks embedded in {result.sync_s:.0f} s, "
            f"{rate:.1f} chunks/s)"
        )
    rows = [[q.method, q.hit_at_1, q.hit_at_5, q.mrr, q.no_result] for q in result.qualities]
    quality_table = table(["method", "hit@1", "hit@5", f"MRR@{MRR_DEPTH}", "no result"], rows, title=header)
    vector, keyword, hybrid = result.qualities
    verdict = all(
        getattr(hybrid, m) >= max(getattr(vector, m), getattr(keyword, m)) for m in ("hit_at_1", "hit_at_5", "mrr")
    )
    lines = [quality_table, f"hybrid ≥ both halves on hit@1, hit@5 and MRR: {'yes' if verdict else 'NO'}"]
    weight_rows = [[q.method, q.hit_at_1, q.hit_at_5, q.mrr, q.no_result] for q in result.weights]
    lines.append(
        table(
            ["fusion (vector_weight=1.0)", "hit@1", "hit@5", f"MRR@{MRR_DEPTH}", "no result"],
            weight_rows,
            title=f"Fusion with other keyword weights (production: keyword_weight={RankingPolicy().keyword_weight})",
        )
    )
    if result.missing_titles:
        lines.append(f"answer titles not in the corpus: {', '.join(result.missing_titles)}")
    r = result.refusal
    refusal_rows = [
        [
            _policy_name(x.policy),
            x.refused_unanswerable,
            x.refusal_rate,
            x.refused_answerable,
            x.false_refusal_rate,
        ]
        for x in [r, *result.sweep]
    ]
    lines.append(
        table(
            [
                "evidence policy (refuse_below / confident_above / coverage)",
                "refused unanswerable",
                f"refusal rate (of {r.unanswerable})",
                "refused answerable",
                f"false-refusal rate (of {r.answerable})",
            ],
            refusal_rows,
            title="Refusals: first row is production (bot/services.py), then the best nearby policies",
        )
    )
    median, low = statistics.median(r.answerable_similarity), min(r.answerable_similarity)
    none_median, none_high = statistics.median(r.unanswerable_similarity), max(r.unanswerable_similarity)
    lines.append(
        f"top similarity: answerable median {median:.2f} (min {low:.2f}); "
        f"unanswerable median {none_median:.2f} (max {none_high:.2f})"
    )
    return "\n\n".join(lines)


def _policy_name(policy: EvidencePolicy) -> str:
    return f"{policy.refuse_below:.2f} / {policy.confident_above:.2f} / {policy.min_term_coverage:.1f}"


def result_json(result: RetrievalResult) -> dict[str, Any]:
    def refusal_json(r: Refusals) -> dict[str, Any]:
        return {
            "policy": asdict(r.policy),
            "refusal_rate": r.refusal_rate,
            "false_refusal_rate": r.false_refusal_rate,
            "refused_unanswerable": r.refused_unanswerable,
            "refused_answerable": r.refused_answerable,
        }

    return {
        "pages": result.pages,
        "chunks": result.chunks,
        "sync_s": result.sync_s,
        "sync_chunks_embedded": result.sync_chunks_embedded,
        "quality": [asdict(q) for q in result.qualities],
        "keyword_weight_sweep": [asdict(q) for q in result.weights],
        "refusal": refusal_json(result.refusal),
        "sweep": [refusal_json(r) for r in result.sweep],
        "missing_titles": result.missing_titles,
    }


@asynccontextmanager
async def cached_manual_database(pages: Sequence[Page]) -> AsyncIterator[str]:
    """The DSN of the cached bench database (rebuilt when the corpus or the chunking code changed)."""
    marker = DB_DIR / "corpus.txt"
    fingerprint = corpus_fingerprint(pages)
    keep = marker.exists() and marker.read_text().strip() == fingerprint
    DB_DIR.mkdir(parents=True, exist_ok=True)
    async with bench_database(DATABASE, data_dir=DB_DIR, keep=keep) as dsn:
        marker.write_text(fingerprint)
        yield dsn


def manual_settings(dsn: str, confluence_url: str, **overrides: Any) -> Settings:
    """Settings for the manual served by the emulator: local model, extractive unless overridden."""
    values: dict[str, Any] = {
        "database_url": dsn, "askdocs_data_dir": CACHE_DIR, "confluence_base_url": confluence_url,
        "confluence_email": EMAIL, "confluence_api_token": TOKEN, "confluence_spaces": [SPACE_KEY],
        "embedding_provider": "local", "llm_provider": "none",
    }
    return load_settings(None, **{**values, **overrides})


async def run(pages: Sequence[Page], questions: Sequence[Question]) -> RetrievalResult:
    """Sync into the cached database (rebuilt when the corpus changed), then evaluate."""
    async with cached_manual_database(pages) as dsn:
        return await evaluate(pages, questions, dsn)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retrieval", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pages",
        type=int,
        default=None,
        help="the cited pages plus others up to N (default: the full manual)",
    )
    args = parser.parse_args(argv)
    prepare_environment()
    pages = manual_pages()  # the manual not installed: CorpusMissing exits, naming the install command
    questions = read_questions()
    pages = choose_pages(pages, questions, args.pages)
    result = asyncio.run(run(pages, questions))
    print(machine_line())
    scope = "the full manual" if args.pages is None else "the cited pages + others"
    print(report(result, questions, scope=scope))
    append_result("retrieval", result_json(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
