"""Memory use of `askdocs run`: idle after start-up, during a sync of the demo space (59 pages), and after.

`python -m bench.memory [--idle-s S] [--providers openai,local]`

A real `askdocs run` subprocess (API on 127.0.0.1 port 0, no Slack) with its own embedded Postgres in a
temporary data directory, pointed at the Confluence and OpenAI emulators served by this process. Every
100 ms: VmRSS and VmHWM of the askdocs process from /proc/<pid>/status, and the postgres processes' total
(postmaster + backends: RSS summed, which counts shared buffers once per process, and PSS from
/proc/<pid>/smaps_rollup, which splits shared pages fairly). CONFLUENCE_SPACES is left unset so the
scheduler does not sync an empty knowledge base at start-up; the sync is `POST /api/sync?wait=true`.

Providers: `openai` = embeddings from the OpenAI emulator (no model in the process); `local` = the
zero-credential default, all-MiniLM-L6-v2 in-process (loaded on the first embed, so not at idle).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import append_result, machine_line, prepare_environment, table
from bot.demo.confluence import SampleConfluence as ConfluenceEmulator
from bot.demo.space import DEMO_SPACE, load_demo_pages, populate
from tests.emulators.openai import OpenAIEmulator

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-api-key"
OPENAI_KEY = "sk-bench"
CONFLUENCE_EMAIL, CONFLUENCE_TOKEN = "bench@example.com", "bench-token"
LISTENING = re.compile(r"askdocs api listening on (http://\S+)")
SAMPLE_INTERVAL_S = 0.1
PHASES = ("start-up", "idle", "sync", "after sync")


@dataclass(frozen=True)
class Sample:
    phase: str
    rss_kib: int
    hwm_kib: int
    pg_rss_kib: int
    pg_pss_kib: int
    pg_processes: int


@dataclass
class Run:
    provider: str
    samples: list[Sample] = field(default_factory=list)
    phase_s: dict[str, float] = field(default_factory=dict)
    sync: dict[str, Any] = field(default_factory=dict)

    def in_phase(self, phase: str) -> list[Sample]:
        return [s for s in self.samples if s.phase == phase]


def status_kib(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB) of one process; empty if it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M)}


def pss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    found = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
    return int(found.group(1)) if found else 0


def postgres_pids(pgdata: Path) -> list[int]:
    """The postmaster (first line of postmaster.pid) and its children (backends, walwriter, …)."""
    try:
        postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the comm field may hold spaces and parentheses
        if ppid == postmaster:
            pids.append(int(entry.name))
    return pids


class Sampler:
    """Samples the askdocs process and the postgres processes every 100 ms, tagged with the current phase."""

    def __init__(self, pid: int, pgdata: Path, into: list[Sample]) -> None:
        self.pid, self.pgdata, self.phase = pid, pgdata, PHASES[0]
        self._into = into
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        own = status_kib(self.pid)
        if not own:
            return
        pg = postgres_pids(self.pgdata)
        pg_status = [status_kib(p) for p in pg]
        self._into.append(Sample(
            self.phase, own.get("VmRSS", 0), own.get("VmHWM", 0),
            sum(s.get("VmRSS", 0) for s in pg_status), sum(pss_kib(p) for p in pg), len(pg)))

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    def __enter__(self) -> Sampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


def child_env(data_dir: Path, confluence: ConfluenceEmulator, openai: OpenAIEmulator,
              provider: str) -> dict[str, str]:
    """Only what askdocs should see: no proxies, no Slack tokens, no DATABASE_URL (embedded Postgres)."""
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR") if key in os.environ}
    assert confluence.base_url is not None
    env |= {
        "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "ASKDOCS_DATA_DIR": str(data_dir), "API_HOST": "127.0.0.1", "API_PORT": "0", "API_KEY": API_KEY,
        "CONFLUENCE_BASE_URL": confluence.base_url, "CONFLUENCE_EMAIL": CONFLUENCE_EMAIL,
        "CONFLUENCE_API_TOKEN": CONFLUENCE_TOKEN, "LLM_PROVIDER": "none", "EMBEDDING_PROVIDER": provider,
    }
    if provider == "openai":
        env |= {"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": openai.base_url,
                "EMBEDDING_MODEL": "emulator-embedding"}
    return env


@asynccontextmanager
async def askdocs_run(env: dict[str, str], cwd: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, list[str]]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", cwd=cwd, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    lines: list[str] = []

    async def collect() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            lines.append(raw.decode(errors="replace"))

    reader = asyncio.create_task(collect())
    try:
        yield process, lines
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                with suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        await reader


async def api_url(process: asyncio.subprocess.Process, lines: list[str], timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in lines:
            if found := LISTENING.search(line):
                return found.group(1)
        if process.returncode is not None:
            break
        await asyncio.sleep(0.05)
    raise RuntimeError("askdocs run did not start:\n" + "".join(lines[-30:]))


async def measure_one(provider: str, confluence: ConfluenceEmulator, openai: OpenAIEmulator, *,
                      idle_s: float) -> Run:
    run = Run(provider)
    with tempfile.TemporaryDirectory(prefix="askdocs-bench-memory-") as scratch:
        data_dir = Path(scratch) / "data"
        env = child_env(data_dir, confluence, openai, provider)
        started = time.monotonic()
        async with askdocs_run(env, Path(scratch)) as (process, lines), aiohttp.ClientSession() as http:
            with Sampler(process.pid, data_dir / "pgdata", run.samples) as sampler:
                url = await api_url(process, lines)
                run.phase_s["start-up"] = time.monotonic() - started
                sampler.phase = "idle"
                await asyncio.sleep(idle_s)
                sampler.phase = "sync"
                began = time.monotonic()
                async with http.post(f"{url}/api/sync?wait=true", json={"spaces": [DEMO_SPACE]},
                                     headers={"X-API-Key": API_KEY},
                                     timeout=aiohttp.ClientTimeout(total=1800)) as response:
                    run.sync = await response.json()
                    if response.status != 200:
                        raise RuntimeError(f"sync failed: {response.status} {run.sync}")
                run.phase_s["sync"] = time.monotonic() - began
                sampler.phase = "after sync"
                await asyncio.sleep(idle_s)
                sampler.sample()
    return run


def report(runs: list[Run]) -> str:
    rows: list[list[object]] = []
    for run in runs:
        for phase in PHASES:
            samples = run.in_phase(phase)
            if not samples:
                continue
            rows.append([
                run.provider if phase == PHASES[0] else "", phase, run.phase_s.get(phase),
                len(samples), max(s.rss_kib for s in samples) / 1024, samples[-1].rss_kib / 1024,
                samples[-1].hwm_kib / 1024, max(s.pg_processes for s in samples),
                max(s.pg_rss_kib for s in samples) / 1024, max(s.pg_pss_kib for s in samples) / 1024,
            ])
    headers = ["embeddings", "phase", "seconds", "samples", "askdocs peak RSS MiB", "RSS at end MiB",
               "VmHWM at end MiB", "pg procs", "pg RSS sum MiB", "pg PSS sum MiB"]
    lines = [table(headers, rows, title="Memory of `askdocs run` (sampled every 100 ms)")]
    for run in runs:
        lines.append(f"{run.provider}: sync {run.sync.get('pages_added', run.sync.get('synced'))} pages, "
                     f"{run.sync.get('chunks_embedded', '?')} chunks embedded, peak VmHWM "
                     f"{max(s.hwm_kib for s in run.samples) / 1024:.0f} MiB")
    return "\n".join(lines)


def as_json(runs: list[Run]) -> dict[str, Any]:
    out: dict[str, Any] = {"sample_interval_s": SAMPLE_INTERVAL_S, "runs": []}
    for run in runs:
        phases = {}
        for phase in PHASES:
            samples = run.in_phase(phase)
            if samples:
                phases[phase] = {
                    "seconds": run.phase_s.get(phase), "samples": len(samples),
                    "askdocs_peak_rss_mib": max(s.rss_kib for s in samples) / 1024,
                    "askdocs_hwm_mib": samples[-1].hwm_kib / 1024,
                    "postgres_peak_rss_sum_mib": max(s.pg_rss_kib for s in samples) / 1024,
                    "postgres_peak_pss_sum_mib": max(s.pg_pss_kib for s in samples) / 1024,
                    "postgres_processes": max(s.pg_processes for s in samples),
                }
        out["runs"].append({"embedding_provider": run.provider, "phases": phases, "sync": run.sync})
    return out


async def measure(providers: list[str], *, idle_s: float) -> list[Run]:
    runs = []
    async with OpenAIEmulator(api_key=OPENAI_KEY, embedding_dimension=384) as openai:
        for provider in providers:
            confluence = ConfluenceEmulator(email=CONFLUENCE_EMAIL, api_token=CONFLUENCE_TOKEN)
            populate(confluence, load_demo_pages())
            await confluence.start()
            try:
                print(f"  {provider}: starting askdocs run…", flush=True)
                runs.append(await measure_one(provider, confluence, openai, idle_s=idle_s))
            finally:
                await confluence.stop()
    return runs


def load_average() -> str:
    """/proc/loadavg's 1/5/15-minute averages: other work on the machine shows here."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--idle-s", type=float, default=5.0, help="seconds sampled idle before/after the sync")
    parser.add_argument("--providers", default="openai,local", help="EMBEDDING_PROVIDER values, in order")
    args = parser.parse_args(argv)
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    if not set(providers) <= {"openai", "local"}:
        parser.error("providers: openai and/or local")
    prepare_environment()
    print(machine_line(), flush=True)
    load_before = load_average()
    runs = asyncio.run(measure(providers, idle_s=args.idle_s))
    print(report(runs), flush=True)
    load = {"before": load_before, "after": load_average()}
    print(f"load average (1/5/15 min) before: {load['before']}, after: {load['after']} "
          f"(other work on this machine skews timings)")
    append_result("memory", {**as_json(runs), "load_average": load})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
