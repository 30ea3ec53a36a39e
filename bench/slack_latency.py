"""Slack round-trip latency: 50 questions arriving together at the real Bolt app over Socket Mode.

`python -m bench.slack_latency [--local-pages N] [--questions N] [--skip-local]`

The real `SlackBot` (Bolt AsyncApp + AsyncSocketModeHandler) runs against the Slack emulator, with the real
service graph: a database of its own (embedded Postgres in a temporary directory, or DATABASE_URL's server),
the demo space (bot/demo/pages.jsonl, the PostgreSQL manual) in the Confluence emulator. Per question, from
the moment the emulator sent the `app_mention` envelope:

- ack: the emulator's ack record (`Ack.latency_s`; Slack redelivers after 3 s),
- first text: the first text in the question's thread (`chat.startStream` of a streamed answer, or the
  `chat.postMessage` of one that arrives whole; Slack's loading status shows before it, at no message),
- final: the last write of that message (`chat.stopStream`, a correcting `chat.update`, or the post itself).

`--burst N` adds the issue-17 scenario: N questions at once while the model streams each answer for
several seconds (`--stream-delta-s` between deltas), under Slack's limits (chat.update 50 and
chat.appendStream 100 a minute for the workspace, in the emulator and in the bot's budget) and without.

Rounds: emulator embeddings ("emulator-embedding") with extractive answers and with the LLM (OpenAI
emulator); then the real all-MiniLM-L6-v2 (`LocalEmbedder`, the zero-credential default) extractive while
the space is being embedded, extractive once it is synced, and with the LLM (the emulator streams at
once, so LLM rounds time our side, not a model's). The bot runs here; the three emulators run in a child
process, as the remote services they stand in for, so their work doesn't land on the bot's event loop and
acks are read when they arrive. Loop lag is how late a 10 ms timer fires on the bot's loop: CPU held by
the loop (not by worker threads) shows up there. Load from other processes on the machine is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.harness import (
    BENCH_DIR,
    append_result,
    bench_database,
    machine_line,
    prepare_environment,
    table,
)
from bot.demo.confluence import SampleConfluence as ConfluenceEmulator
from bot.demo.space import DEMO_SPACE, load_demo_pages, populate
from bot.operations.sync_runner import RunOutcome, StartedRun
from bot.services import Services, build_services
from bot.settings import load_settings
from bot.slack import blocks
from bot.slack.app import SlackBot
from bot.slack.budget import RateBudget
from ingest.sync import Progress
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import SLACK_TIER_LIMITS, SlackEmulator

ACK_TARGET_P95_MS = 300.0
QUESTIONS_FILE = BENCH_DIR / "data" / "retrieval_questions.jsonl"
OPENAI_KEY = "sk-bench"
CONFLUENCE_EMAIL, CONFLUENCE_TOKEN = "bench@example.com", "bench-token"
CHANNEL = "C1"
EMULATOR_MODEL = "emulator-embedding"


@dataclass(frozen=True)
class QuestionTiming:
    ack_ms: float
    first_reply_ms: float | None
    final_ms: float | None
    outcome: str  # answered | refused | error | none


@dataclass
class Round:
    name: str
    timings: list[QuestionTiming] = field(default_factory=list)
    loop_lag_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    note: str = ""
    api_calls: dict[str, int] = field(default_factory=dict)  # Web API calls during the round, by method
    error_texts: list[str] = field(default_factory=list)  # what users saw instead of an answer

    def values(self, metric: str) -> list[float]:
        return [v for t in self.timings if (v := getattr(t, metric)) is not None]

    def outcomes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.timings:
            counts[t.outcome] = counts.get(t.outcome, 0) + 1
        return counts


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (p95 of 50 values is the 48th smallest)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def load_questions(count: int) -> list[str]:
    """Real questions about the demo space (the retrieval benchmark's set), de-duplicated, in file order."""
    seen: dict[str, None] = {}
    for line in QUESTIONS_FILE.read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            if item.get("space", DEMO_SPACE) == DEMO_SPACE:
                seen.setdefault(item["question"], None)
    questions = list(seen)
    if len(questions) < count:
        raise SystemExit(f"{QUESTIONS_FILE} has only {len(questions)} questions, {count} asked")
    return questions[:count]


class LoopLag:
    """Samples how late a short sleep wakes up: the event loop's responsiveness while a round runs."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self._interval_s = interval_s
        self.samples_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self._interval_s)
            self.samples_ms.append((time.perf_counter() - before - self._interval_s) * 1000)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def ask_together(slack: SlackEmulator, questions: Sequence[str], *, name: str,
                       timeout_s: float = 600) -> Round:
    """Send every question at once, wait for each final message, and time each step."""
    calls_before = len(slack.calls)
    started = time.perf_counter()
    sent = await asyncio.gather(*(slack.mention(q, channel=CHANNEL) for q in questions))
    for envelope_id, ts in sent:  # cheap predicates: the emulator re-checks them on every call
        await slack.wait_for_ack(envelope_id, timeout=timeout_s)
        await slack.wait_for_message(partial(_finished_in, slack, ts), timeout=timeout_s)
    result = Round(name, wall_s=time.perf_counter() - started)
    calls = slack.calls[calls_before:]
    for call in calls:
        key = call.method if call.ok else f"{call.method} ({call.error})"
        result.api_calls[key] = result.api_calls.get(key, 0) + 1
    for envelope_id, ts in sent:
        ack = slack.acks[envelope_id]
        sent_at = ack.ack_time - ack.latency_s
        [message] = [m for m in slack.messages_in_thread(CHANNEL, ts) if m.get("bot_id") == slack.bot_id]
        first = next((c for c in calls if c.ok and c.method in ("chat.postMessage", "chat.startStream")
                      and c.params.get("thread_ts") == ts), None)
        writes = [c for c in calls if c.ok and c.method in ("chat.stopStream", "chat.update")
                  and c.params.get("ts") == message["ts"]]
        final = writes[-1] if writes else first
        result.timings.append(QuestionTiming(
            ack_ms=ack.latency_s * 1000,
            first_reply_ms=(first.time - sent_at) * 1000 if first else None,
            final_ms=(final.time - sent_at) * 1000 if final else None,
            outcome=_outcome(message),
        ))
        if result.timings[-1].outcome == "error":
            result.error_texts.append(str(message.get("text"))[:200])
    return result


def _finished_in(slack: SlackEmulator, thread_ts: str, message: dict[str, Any]) -> bool:
    return (message.get("thread_ts") == thread_ts and message["ts"] != thread_ts
            and message.get("bot_id") == slack.bot_id and not slack.is_streaming(CHANNEL, message["ts"])
            and _outcome(message) != "streaming")


def _outcome(params: dict[str, Any]) -> str:
    ids = [str(b.get("block_id", "")) for b in params.get("blocks") or []]
    text = str(params.get("text") or "")
    if any(i.startswith(blocks.ANSWER_BLOCK_PREFIX) for i in ids):
        return "refused" if text.startswith("I couldn't find") else "answered"
    shown = json.dumps(params.get("blocks") or [], ensure_ascii=False)
    # No blocks: a stream stopped and about to be replaced by the final text (see AnswerReply.finish).
    if not params.get("blocks") or blocks.WRITING in shown or blocks.SEARCHING in shown:
        return "streaming"
    return "error"


# ---- the emulators, in a process of their own -----------------------------------------------------------


@dataclass(frozen=True)
class EmulatorUrls:
    slack_api: str
    openai: str
    confluence_full: str  # all demo pages
    confluence_subset: str  # the first `local_pages` demo pages
    slack_bot_token: str
    slack_app_token: str


def serve_emulators(conn: Connection, local_pages: int) -> None:
    """Child process: Slack, OpenAI and Confluence emulators, like the remote services they stand in for.

    Their work (rendering messages, hashing embeddings, serving pages) then doesn't run on the bot's event
    loop, and acks are read the moment they arrive. Commands: ("ask", questions, name) -> Round; ("stop",).
    """
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(_serve_emulators(conn, local_pages))


async def _serve_emulators(conn: Connection, local_pages: int) -> None:
    pages = load_demo_pages()
    full = ConfluenceEmulator(email=CONFLUENCE_EMAIL, api_token=CONFLUENCE_TOKEN)
    subset = ConfluenceEmulator(email=CONFLUENCE_EMAIL, api_token=CONFLUENCE_TOKEN)
    populate(full, pages)
    populate(subset, pages[:local_pages])
    async with (
        OpenAIEmulator(api_key=OPENAI_KEY, embedding_dimension=384) as openai,
        SlackEmulator() as slack,
        full, subset,
    ):
        assert full.base_url is not None and subset.base_url is not None
        conn.send(EmulatorUrls(slack.base_url, openai.base_url, full.base_url, subset.base_url,
                               slack.bot_token, slack.app_token))
        while True:
            command = await asyncio.to_thread(conn.recv)
            if command[0] == "configure":  # ("configure", Slack's limits, seconds between model deltas)
                slack.set_rate_limits(command[1])
                openai.stream_delta_interval_s = command[2]
                conn.send(None)
                continue
            if command[0] != "ask":
                break
            try:
                conn.send(await ask_together(slack, command[1], name=command[2]))
            except Exception as error:  # the parent shows it; a dead child would leave it waiting
                conn.send(error)


class Emulators:
    """The parent's handle on the emulator process."""

    def __init__(self, local_pages: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=serve_emulators, args=(child, local_pages), daemon=True)
        self.urls: EmulatorUrls | None = None

    async def __aenter__(self) -> EmulatorUrls:
        self._process.start()
        self.urls = await asyncio.to_thread(self._conn.recv)
        assert self.urls is not None
        return self.urls

    async def __aexit__(self, *exc: object) -> None:
        self._conn.send(("stop",))
        await asyncio.to_thread(self._process.join, 30)
        if self._process.is_alive():
            self._process.kill()

    async def configure(self, *, limits: dict[str, int], stream_delta_s: float) -> None:
        """Slack's per-method limits in the emulator and the model's pace, for the rounds that follow."""
        self._conn.send(("configure", limits, stream_delta_s))
        await asyncio.to_thread(self._conn.recv)

    async def ask(self, questions: Sequence[str], *, name: str) -> Round:
        """Fire the questions together from the emulator process; loop lag is sampled here, on the bot's loop."""
        with LoopLag() as lag:
            self._conn.send(("ask", list(questions), name))
            result = await asyncio.to_thread(self._conn.recv)
        if isinstance(result, Exception):
            raise result
        assert isinstance(result, Round)
        result.loop_lag_ms = lag.samples_ms
        return result


# ---- the bot, in this process --------------------------------------------------------------------------


@asynccontextmanager
async def running_bot(
    dsn: str, data_dir: Path, urls: EmulatorUrls, *, embedding: str, llm: bool,
    budget: RateBudget | None = None,
) -> AsyncIterator[Services]:
    """build_services + SlackBot.start() for one configuration; stopped (and drained) on exit."""
    settings = load_settings(
        None, database_url=dsn, askdocs_data_dir=data_dir,
        confluence_base_url=urls.confluence_full if embedding == "emulator" else urls.confluence_subset,
        confluence_email=CONFLUENCE_EMAIL, confluence_api_token=CONFLUENCE_TOKEN,
        confluence_spaces=[DEMO_SPACE], openai_api_key=OPENAI_KEY, openai_base_url=urls.openai,
        embedding_provider="openai" if embedding == "emulator" else "local",
        embedding_model=EMULATOR_MODEL if embedding == "emulator" else None,
        llm_provider="openai" if llm else "none",
        slack_bot_token=urls.slack_bot_token, slack_app_token=urls.slack_app_token, slack_api_url=urls.slack_api,
    )
    async with build_services(settings) as services:
        await services.embedder.embed(["warm up"])  # a local model loads on first use (~5 s): not a reply
        bot = SlackBot(services, budget=budget)
        await bot.start()
        try:
            yield services
        finally:
            await bot.stop()


async def sync_demo(services: Services) -> RunOutcome:
    outcome = await services.sync.run(spaces=[DEMO_SPACE], trigger="cli", requested_by="bench")
    if not isinstance(outcome, RunOutcome) or outcome.status != "succeeded":
        raise RuntimeError(f"sync of the demo space did not succeed: {outcome}")
    return outcome


async def emulator_rounds(questions: Sequence[str], emulators: Emulators, data_dir: Path) -> list[Round]:
    assert emulators.urls is not None
    urls = emulators.urls
    rounds = []
    async with bench_database("bench_slack_emulator") as dsn:
        async with running_bot(dsn, data_dir, urls, embedding="emulator",
                               llm=False) as services:
            outcome = await sync_demo(services)
            print(f"  emulator embeddings: synced {outcome.report.pages_added} pages in "
                  f"{outcome.duration_s:.1f} s", flush=True)
            rounds.append(await emulators.ask(questions, name="emulator embeddings, extractive"))
        async with running_bot(dsn, data_dir, urls, embedding="emulator", llm=True):
            rounds.append(await emulators.ask(questions, name="emulator embeddings, LLM (emulator)"))
    return rounds


async def burst_rounds(questions: Sequence[str], emulators: Emulators, data_dir: Path, *,
                       stream_delta_s: float) -> list[Round]:
    """The same burst while the model streams for seconds: without Slack's limits, then under them."""
    assert emulators.urls is not None
    rounds: list[Round] = []
    async with bench_database("bench_slack_burst") as dsn:
        for label, limits in (("no limits", {}), ("Slack's limits", dict(SLACK_TIER_LIMITS))):
            await emulators.configure(limits=limits, stream_delta_s=stream_delta_s)
            async with running_bot(dsn, data_dir, emulators.urls, embedding="emulator", llm=True,
                                   budget=RateBudget(limits)) as services:
                if not rounds:
                    await sync_demo(services)
                rounds.append(await emulators.ask(
                    questions, name=f"model streaming {stream_delta_s:g} s/delta, {label}"))
        await emulators.configure(limits=dict(SLACK_TIER_LIMITS), stream_delta_s=0.0)
    return rounds


async def local_rounds(questions: Sequence[str], emulators: Emulators, data_dir: Path, *,
                       pages: int) -> list[Round]:
    assert emulators.urls is not None
    urls = emulators.urls
    rounds = []
    async with bench_database("bench_slack_local") as dsn:
        async with running_bot(dsn, data_dir, urls, embedding="local",
                               llm=False) as services:
            embedding = asyncio.Event()

            async def progress(run_id: int, step: Progress) -> None:
                if step.done >= 2:  # conversion is quick; by now the sync is embedding
                    embedding.set()

            started = await services.sync.start(spaces=[DEMO_SPACE], trigger="cli", requested_by="bench",
                                                progress=progress)
            assert isinstance(started, StartedRun)
            await asyncio.wait({asyncio.ensure_future(embedding.wait()), started.task},
                               return_when=asyncio.FIRST_COMPLETED)
            during = await emulators.ask(questions, name="local model, extractive, during sync")
            sync_running_at_end = not started.task.done()
            outcome = await started.wait()
            during.note = (f"sync of {pages} pages took {outcome.duration_s:.0f} s; "
                           f"{'still running' if sync_running_at_end else 'finished'} when the last answer came")
            print(f"  local model: synced {outcome.report.pages_added} pages in {outcome.duration_s:.1f} s "
                  f"({outcome.report.chunks_embedded} chunks)", flush=True)
            rounds.append(during)
            rounds.append(await emulators.ask(questions, name="local model, extractive, synced"))
        async with running_bot(dsn, data_dir, urls, embedding="local", llm=True):
            rounds.append(await emulators.ask(questions, name="local model, LLM (emulator), synced"))
    return rounds


async def measure(*, questions: int, local_pages: int, skip_local: bool, burst: int,
                  stream_delta_s: float) -> list[Round]:
    asked = load_questions(max(questions, burst))
    with tempfile.TemporaryDirectory(prefix="askdocs-bench-slack-") as scratch:
        emulators = Emulators(local_pages)
        async with emulators:
            rounds = await emulator_rounds(asked[:questions], emulators, Path(scratch))
            if burst:
                rounds += await burst_rounds(asked[:burst], emulators, Path(scratch),
                                             stream_delta_s=stream_delta_s)
            if not skip_local:
                rounds += await local_rounds(asked[:questions], emulators, Path(scratch), pages=local_pages)
    return rounds


# ---- report -------------------------------------------------------------------------------------------


def report(rounds: Sequence[Round]) -> str:
    rows: list[list[object]] = []
    for r in rounds:
        for label, metric in (("ack", "ack_ms"), ("first text", "first_reply_ms"), ("final answer", "final_ms")):
            values = r.values(metric)
            rows.append([r.name if label == "ack" else "", label, len(values), percentile(values, 50),
                         percentile(values, 95), max(values) if values else None])
        rows.append(["", "loop lag", len(r.loop_lag_ms), percentile(r.loop_lag_ms, 50),
                     percentile(r.loop_lag_ms, 95), max(r.loop_lag_ms) if r.loop_lag_ms else None])
    asked = sorted({len(r.timings) for r in rounds})
    title = (f"Slack latency, {' or '.join(map(str, asked))} questions arriving together "
             "(ms from the envelope being sent)")
    out = [table(["round", "measure", "n", "p50 ms", "p95 ms", "max ms"], rows, title=title)]
    outcome_rows = []
    for r in rounds:
        counts = r.outcomes()
        ack_p95 = percentile(r.values("ack_ms"), 95)
        met = "met" if ack_p95 is not None and ack_p95 <= ACK_TARGET_P95_MS else "MISSED"
        outcome_rows.append([r.name, counts.get("answered", 0), counts.get("refused", 0),
                             counts.get("error", 0) + counts.get("none", 0), r.wall_s, met, r.note])
    out.append(table(["round", "answered", "refused", "errors", "wall s", f"ack p95 ≤ {ACK_TARGET_P95_MS:.0f}",
                      "note"], outcome_rows))
    for r in rounds:
        calls = ", ".join(f"{k} {v}" for k, v in sorted(r.api_calls.items()))
        out.append(f"{r.name}: Web API calls {calls}" + (f"; first error shown: {r.error_texts[0]!r}"
                                                         if r.error_texts else ""))
    return "\n\n".join(out)


def as_json(rounds: Sequence[Round], *, local_pages: int) -> dict[str, Any]:
    def summary(values: Sequence[float]) -> dict[str, float | None]:
        return {"p50": percentile(values, 50), "p95": percentile(values, 95),
                "max": max(values) if values else None, "mean": statistics.fmean(values) if values else None}

    return {
        "ack_target_p95_ms": ACK_TARGET_P95_MS, "local_pages": local_pages,
        "rounds": [{"name": r.name, "questions": len(r.timings), "wall_s": r.wall_s, "note": r.note,
                    "outcomes": r.outcomes(), "api_calls": r.api_calls, "error_texts": r.error_texts[:5],
                    "ack_ms": summary(r.values("ack_ms")),
                    "first_reply_ms": summary(r.values("first_reply_ms")),
                    "final_ms": summary(r.values("final_ms")), "loop_lag_ms": summary(r.loop_lag_ms)}
                   for r in rounds],
    }


def load_average() -> str:
    """/proc/loadavg's 1/5/15-minute averages: other work on the machine shows here."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.slack_latency", description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=50)
    parser.add_argument("--local-pages", type=int, default=59,
                        help="demo pages synced for the local-model rounds (59 = all, ~1 min on 2 cores)")
    parser.add_argument("--skip-local", action="store_true", help="only the emulator-embedding rounds")
    parser.add_argument("--burst", type=int, default=20,
                        help="questions at once while the model streams, with and without Slack's limits (0: skip)")
    parser.add_argument("--stream-delta-s", type=float, default=0.25,
                        help="the model's pause between deltas in the burst rounds")
    args = parser.parse_args(argv)
    prepare_environment()
    logging.basicConfig(level=logging.ERROR)
    print(machine_line(), flush=True)
    load_before = load_average()
    rounds = asyncio.run(measure(questions=args.questions, local_pages=args.local_pages,
                                 skip_local=args.skip_local, burst=args.burst,
                                 stream_delta_s=args.stream_delta_s))
    print(report(rounds), flush=True)
    load = {"before": load_before, "after": load_average()}
    print(f"load average (1/5/15 min) before: {load['before']}, after: {load['after']} "
          f"(other work on this machine skews timings)")
    append_result("slack_latency", {**as_json(rounds, local_pages=args.local_pages), "load_average": load})
    missed = [r.name for r in rounds
              if (p95 := percentile(r.values("ack_ms"), 95)) is None or p95 > ACK_TARGET_P95_MS]
    if missed:
        print(f"ack p95 target ({ACK_TARGET_P95_MS:.0f} ms) missed in: {', '.join(missed)}")
    bursts = [r for r in rounds if r.name.startswith("model streaming")]
    if len(bursts) == 2:
        free, limited = (percentile(r.values("final_ms"), 95) or 0.0 for r in bursts)
        print(f"burst under Slack's limits: p95 final {limited:.0f} ms vs {free:.0f} ms without "
              f"({limited / free:.2f}×; goal ≤ 1.5×)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
