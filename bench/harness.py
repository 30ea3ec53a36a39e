"""What every benchmark shares: aligned tables, the results file, the machine, a scratch database.

Benchmarks run against their own embedded Postgres in a temporary directory, or against the server named by
`DATABASE_URL` (each benchmark then gets its own database there, dropped and recreated).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from db.embedded import EmbeddedPostgres

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_FILE = BENCH_DIR / "results" / "latest.json"
CACHE_DIR = BENCH_DIR / ".cache"
_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def prepare_environment() -> None:
    """Local HTTP only (clients honour proxy variables and ignore NO_PROXY) and no model hub."""
    for name in _PROXY_VARIABLES:
        os.environ.pop(name, None)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# ---- output -------------------------------------------------------------------------------------------


def cell(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, title: str | None = None) -> str:
    """A plain-text table: text columns left-aligned, numbers right-aligned."""
    shown = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in shown)) if shown else len(h) for i, h in enumerate(headers)]
    numeric = [
        all(isinstance(row[i], int | float) or row[i] is None for row in rows) and bool(rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    out = [title] if title else []
    out += [line(headers), line(["-" * w for w in widths]), *(line(r) for r in shown)]
    return "\n".join(out)


def machine() -> dict[str, Any]:
    """Cores, CPU model and RAM, as the README reports them."""
    model = platform.processor() or "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        found = re.search(r"^Model name:\s*(.+)$", lscpu, re.M)
        model = found.group(1).strip() if found else model
    except OSError:
        pass
    ram_gib = None
    try:
        meminfo = Path("/proc/meminfo").read_text()
        kib = re.search(r"^MemTotal:\s*(\d+)", meminfo, re.M)
        ram_gib = round(int(kib.group(1)) / 1024 / 1024, 1) if kib else None
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "ram_gib": ram_gib, "python": platform.python_version()}


def machine_line() -> str:
    m = machine()
    return f"machine: {m['nproc']} cores, {m['cpu']}, {m['ram_gib']} GiB RAM, Python {m['python']}"


def append_result(benchmark: str, result: dict[str, Any], *, path: Path = RESULTS_FILE) -> None:
    """Append one run to the results file (a JSON list; the file is gitignored)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        runs = json.loads(path.read_text(encoding="utf-8"))
        runs = runs if isinstance(runs, list) else []
    except (FileNotFoundError, json.JSONDecodeError):
        runs = []
    runs.append(
        {
            "benchmark": benchmark,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "result": result,
        }
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(runs, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)


class Stopwatch:
    """Wall time of a block: `with Stopwatch() as sw: ...; sw.seconds`."""

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


# ---- databases ----------------------------------------------------------------------------------------


def dsn_for(admin_dsn: str, name: str) -> str:
    """The same server, another database (works for unix-socket URIs with `?host=` too)."""
    base, _, query = admin_dsn.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}" + (f"?{query}" if query else "")


async def recreate_database(admin_dsn: str, name: str, *, keep: bool = False) -> str:
    """Create database `name` (dropping an old one unless `keep`); returns its DSN."""
    if not _DATABASE_NAME.match(name):
        raise ValueError(f"bad database name {name!r}")
    admin = await asyncpg.connect(admin_dsn)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists and not keep:
            await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")  # name checked above
        if not exists or not keep:
            await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    return dsn_for(admin_dsn, name)


@asynccontextmanager
async def bench_database(
    name: str, *, data_dir: Path | None = None, keep: bool = False
) -> AsyncIterator[str]:
    """A database for one benchmark: on DATABASE_URL's server, or an embedded server.

    The embedded server lives in `data_dir` (kept: a cache) or in a temporary directory (removed after).
    """
    external = os.environ.get("DATABASE_URL")
    if external:
        yield await recreate_database(external, name, keep=keep)
        return
    scratch = data_dir is None
    folder = Path(tempfile.mkdtemp(prefix="askdocs-bench-")) if data_dir is None else data_dir
    server = EmbeddedPostgres(folder)
    await server.start()
    try:
        yield await recreate_database(server.admin_dsn(), name, keep=keep)
    finally:
        await server.stop()
        if scratch:
            shutil.rmtree(folder, ignore_errors=True)
