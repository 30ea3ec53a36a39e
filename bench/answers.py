"""Answer quality as users see it: which pages an answer cites first and at all, and what it refuses.

The manual is synced once into the cached bench database (bench/retrieval.py), then every question of
bench/data/questions.jsonl goes through the production AnswerEngine, as `POST /api/query` would:

- **extractive**: the zero-credential default (all-MiniLM-L6-v2, no chat model);
- **llm**: the same retrieval with an OpenAI-compatible chat model, the project's emulator (its "model" quotes
  the source sentences sharing most words with the question and cites them; it refuses when none does);
- **llm-rewrite**: `LLM_QUERY_REWRITE=true`, the model writes a passage to search with (the emulator can only
  restate the question, so this measures the plumbing, not what a real model's passage gains).

Per kind (natural, topic, unanswerable) and split (tune, held_out): first cited page right, right page cited at
all, refused. Tune only on the tune split; the held-out split is reported beside it (bench/data/README-questions.md).
Also: answer latency p50/p95, the model's embedding throughput on 2 cores, and the process's peak RSS.

`python -m bench.answers [--modes extractive,llm,llm-rewrite] [--split tune|held_out|all] [--show-misses N]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import append_result, machine_line, prepare_environment, table
from bench.manual import Page, manual_pages, serve_pages
from bench.retrieval import cached_manual_database, manual_settings, sync_manual
from bot.answering.models import Answer, AskContext
from bot.demo.confluence import SampleConfluence
from bot.services import build_services
from ingest.embedders.local import LocalEmbedder

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "bench" / "data" / "questions.jsonl"
EMAIL, TOKEN = "bench@example.com", "bench-confluence-token"
KINDS = ("natural", "topic", "unanswerable")
SPLITS = ("tune", "held_out")


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    answer_titles: tuple[str, ...]
    kind: str
    split: str


@dataclass(frozen=True)
class Outcome:
    question: Question
    refused: bool
    cited_titles: tuple[str, ...]
    closest_titles: tuple[str, ...]
    latency_ms: int

    @property
    def first_right(self) -> bool:
        return bool(self.cited_titles) and self.cited_titles[0] in self.question.answer_titles

    @property
    def any_right(self) -> bool:
        return any(t in self.question.answer_titles for t in self.cited_titles)


@dataclass
class Rates:
    asked: int = 0
    first_right: int = 0
    any_right: int = 0
    refused: int = 0
    latencies: list[int] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.asked += 1
        self.first_right += outcome.first_right
        self.any_right += outcome.any_right
        self.refused += outcome.refused
        self.latencies.append(outcome.latency_ms)

    def share(self, count: int) -> float:
        return count / self.asked if self.asked else 0.0


def read_questions(path: Path = QUESTIONS) -> list[Question]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Question(r["id"], r["question"], tuple(r["answer_titles"]), r["kind"], r["split"]) for r in rows]


def rates_by(outcomes: Sequence[Outcome]) -> dict[tuple[str, str], Rates]:
    rates: dict[tuple[str, str], Rates] = {}
    for outcome in outcomes:
        rates.setdefault((outcome.question.kind, outcome.question.split), Rates()).add(outcome)
    return rates


def percentile(values: Sequence[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0


def outcome_of(question: Question, answer: Answer) -> Outcome:
    return Outcome(question, answer.refused, tuple(s.title for s in answer.sources),
                   tuple(s.title for s in answer.closest), answer.latency_ms)


async def ask_all(services: Any, questions: Sequence[Question]) -> list[Outcome]:
    outcomes = []
    for question in questions:
        answer = await services.engine.answer(question.text, context=AskContext(surface="eval"))
        outcomes.append(outcome_of(question, answer))
    return outcomes


async def embedding_throughput(embedder: LocalEmbedder, texts: Sequence[str]) -> float:
    """Chunks per second for a batch of chunk-sized texts (after a warm-up)."""
    await embedder.embed(list(texts[:8]))
    started = time.monotonic()
    await embedder.embed(list(texts))
    return len(texts) / (time.monotonic() - started)


async def evaluate(pages: Sequence[Page], questions: Sequence[Question], modes: Sequence[str]) -> dict[str, Any]:
    embedder = LocalEmbedder()
    results: dict[str, Any] = {"modes": {}}
    async with cached_manual_database(pages) as dsn, SampleConfluence(email=EMAIL, api_token=TOKEN) as confluence:
        serve_pages(confluence, pages)
        assert confluence.base_url is not None
        async with build_services(manual_settings(dsn, confluence.base_url), embedder=embedder) as services:
            await sync_manual(services)
            async with services.database.pool.acquire() as conn:
                sample = [r["content"] for r in await conn.fetch("SELECT content FROM chunks ORDER BY id LIMIT 128")]
        results["chunks_per_s"] = await embedding_throughput(embedder, sample)
        for mode in modes:
            overrides: dict[str, Any] = {}
            emulator = None
            if mode in ("llm", "llm-rewrite"):
                from tests.emulators.openai import OpenAIEmulator

                emulator = OpenAIEmulator()
                overrides = {"llm_provider": "openai", "openai_api_key": emulator.api_key,
                             "openai_base_url": await emulator.start(), "llm_query_rewrite": mode == "llm-rewrite"}
            try:
                settings = manual_settings(dsn, confluence.base_url, **overrides)
                async with build_services(settings, embedder=embedder) as services:
                    results["modes"][mode] = await ask_all(services, questions)
            finally:
                if emulator is not None:
                    await emulator.stop()
    results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return results


def report(mode: str, outcomes: Sequence[Outcome]) -> str:
    rates = rates_by(outcomes)
    rows = []
    for kind in KINDS:
        for split in SPLITS:
            r = rates.get((kind, split))
            if r is None:
                continue
            if kind == "unanswerable":
                rows.append([kind, split, r.asked, "", "", f"{r.share(r.refused):.1%}"])
            else:
                rows.append([kind, split, r.asked, f"{r.share(r.first_right):.1%}", f"{r.share(r.any_right):.1%}",
                             f"{r.share(r.refused):.1%}"])
    latencies = [o.latency_ms for o in outcomes]
    title = (f"{mode}: answer latency p50 {statistics.median(latencies):.0f} ms, "
             f"p95 {percentile(latencies, 0.95)} ms")
    return table(["kind", "split", "asked", "first cited right", "right page cited", "refused"], rows, title=title)


def misses(outcomes: Sequence[Outcome], limit: int) -> str:
    lines: list[str] = []
    for o in outcomes:
        q = o.question
        wrong = (q.kind == "unanswerable" and not o.refused) or (q.kind != "unanswerable" and not o.first_right)
        if wrong and len(lines) < limit:
            got = ", ".join(o.cited_titles) or f"refused (closest: {', '.join(o.closest_titles)})"
            lines.append(f"{q.id} {q.text}\n    want: {', '.join(q.answer_titles) or '(refusal)'}\n    got:  {got}")
    return "\n".join(lines)


def summary_json(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for (kind, split), r in rates_by(outcomes).items():
        out[f"{kind}/{split}"] = {"asked": r.asked, "first_right": r.share(r.first_right),
                                  "any_right": r.share(r.any_right), "refused": r.share(r.refused)}
    latencies = [o.latency_ms for o in outcomes]
    out["latency_p95_ms"] = percentile(latencies, 0.95)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.answers", description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="extractive,llm,llm-rewrite")
    parser.add_argument("--split", choices=("tune", "held_out", "all"), default="all")
    parser.add_argument("--show-misses", type=int, default=0, metavar="N", help="print N misses per mode")
    args = parser.parse_args(argv)
    prepare_environment()
    pages = manual_pages()  # the manual not installed: CorpusMissing exits, naming the install command
    questions = [q for q in read_questions() if args.split in ("all", q.split)]
    modes = [m for m in args.modes.split(",") if m]
    results = asyncio.run(evaluate(pages, questions, modes))
    print(machine_line())
    print(f"{len(pages)} pages; local model {results['chunks_per_s']:.1f} chunks/s; "
          f"peak RSS {results['peak_rss_mib']:.0f} MiB")
    for mode, outcomes in results["modes"].items():
        print(report(mode, outcomes))
        if args.show_misses:
            print(misses(outcomes, args.show_misses))
    append_result("answers", {
        "chunks_per_s": results["chunks_per_s"], "peak_rss_mib": results["peak_rss_mib"],
        **{mode: summary_json(outcomes) for mode, outcomes in results["modes"].items()},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
