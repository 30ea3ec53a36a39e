"""`python -m bench [name ...]`: run the benchmarks (all by default), each printing its own tables.

Every benchmark is a module under bench/ with `main(argv) -> int`; REGISTRY names them in run order. A
registered module that isn't there yet (bench/slack_latency.py, bench/memory.py) is skipped with a note, so
adding one is: write the module, and it runs.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Benchmark:
    name: str
    module: str
    what: str


REGISTRY: tuple[Benchmark, ...] = (
    Benchmark("sync_cost", "bench.sync_cost", "sync cost against the seed design"),
    Benchmark("convert", "bench.convert", "conversion and chunking throughput"),
    Benchmark(
        "retrieval", "bench.retrieval", "retrieval quality with all-MiniLM-L6-v2 (slow the first time)"
    ),
    Benchmark("answers", "bench.answers", "answer quality per question kind and split, extractive and LLM"),
    Benchmark("search", "bench.search", "hybrid search latency and HNSW recall at 10k/100k chunks"),
    Benchmark("slack_latency", "bench.slack_latency", "Slack round-trip latency"),
    Benchmark("memory", "bench.memory", "memory use"),
    Benchmark("permissions_cost", "bench.permissions_cost", "permission refresh cost (requests, seconds)"),
    Benchmark("loop_stall", "bench.loop_stall", "/healthz and Slack ack latency while a sync converts 2 MB pages"),
)


def available(benchmark: Benchmark) -> bool:
    return importlib.util.find_spec(benchmark.module) is not None


def run_one(benchmark: Benchmark) -> int:
    if not available(benchmark):
        print(f"[{benchmark.name}] skipped: {benchmark.module.replace('.', '/')}.py does not exist yet\n")
        return 0
    print(f"[{benchmark.name}] {benchmark.what}", flush=True)
    started = time.perf_counter()
    module = importlib.import_module(benchmark.module)
    code = int(module.main([]))
    print(f"[{benchmark.name}] exit {code} after {time.perf_counter() - started:.0f} s\n", flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    names = [b.name for b in REGISTRY]
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("benchmarks", nargs="*", metavar="name", help=f"default: all of {', '.join(names)}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.benchmarks) - set(names))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(names)}")
    chosen = [b for b in REGISTRY if not args.benchmarks or b.name in args.benchmarks]
    failed = [b.name for b in chosen if run_one(b) != 0]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
