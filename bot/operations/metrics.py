"""Process metrics for /metrics, through prometheus_client: one registry per process, owned by Services.

Durations are histograms (not summaries) so that replicas' series add up in PromQL
(`histogram_quantile(0.95, sum by (le) (rate(askdocs_question_seconds_bucket[5m])))`).
Knowledge-base gauges are read from the database at scrape time (`snapshot_registry`), not kept here.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.operations.status import KnowledgeBaseStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
QUESTION_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0)
SYNC_BUCKETS_S = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)
SYNC_COUNTERS = ("pages_added", "pages_updated", "pages_deleted", "pages_failed", "chunks_embedded",
                 "chunks_reused", "embedding_tokens", "bodies_fetched")
QUESTION_ERROR_REASONS = ("bad_request", "embedding", "database", "internal")


class Metrics:
    """The counters and histograms askdocs keeps in process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.questions = Counter("askdocs_questions", "Questions answered, by surface and outcome",
                                 ["outcome", "surface"], registry=self.registry)
        self.question_seconds = Histogram("askdocs_question_seconds", "Time to answer a question",
                                          buckets=QUESTION_BUCKETS_S, registry=self.registry)
        self.question_errors = Counter("askdocs_question_errors", "Questions that got an error",
                                       ["reason", "surface"], registry=self.registry)
        self.sync_runs = Counter("askdocs_sync_runs", "Sync runs by final status", ["status"],
                                 registry=self.registry)
        self.sync_seconds = Histogram("askdocs_sync_duration_seconds", "Sync run duration",
                                      buckets=SYNC_BUCKETS_S, registry=self.registry)
        self.sync_totals = {
            name: Counter(f"askdocs_sync_{name}", f"Sync runs' {name.replace('_', ' ')}", registry=self.registry)
            for name in SYNC_COUNTERS
        }
        for reason in QUESTION_ERROR_REASONS:  # zero series, so rate() and alerts work before the first error
            self.question_errors.labels(reason=reason, surface="api")

    def question_answered(self, *, surface: str, refused: bool, seconds: float) -> None:
        self.questions.labels(outcome="refused" if refused else "answered", surface=surface).inc()
        self.question_seconds.observe(seconds)

    def question_failed(self, *, surface: str, reason: str) -> None:
        self.question_errors.labels(reason=reason, surface=surface).inc()

    def sync_finished(self, *, status: str, seconds: float, counters: dict[str, int]) -> None:
        self.sync_runs.labels(status=status).inc()
        self.sync_seconds.observe(seconds)
        for name, counter in self.sync_totals.items():
            counter.inc(counters.get(name, 0))

    def render(self, snapshot: KnowledgeBaseStatus | None = None, *, database_up: bool = True,
               next_sync_at: datetime | None = None) -> str:
        """The exposition text: process metrics, then the knowledge-base gauges of this scrape."""
        scrape = CollectorRegistry(auto_describe=False)
        scrape.register(SnapshotGauges(snapshot, database_up=database_up, next_sync_at=next_sync_at))
        return (generate_latest(self.registry) + generate_latest(scrape)).decode()


class SnapshotGauges(Collector):
    """Knowledge-base gauges from one status snapshot (read by the caller at scrape time)."""

    def __init__(self, snapshot: KnowledgeBaseStatus | None, *, database_up: bool,
                 next_sync_at: datetime | None) -> None:
        self._snapshot = snapshot
        self._up = database_up and snapshot is not None
        self._next_sync_at = next_sync_at

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("askdocs_database_up", "1 when the knowledge base database answered this scrape",
                                value=1 if self._up else 0)
        snapshot = self._snapshot
        if snapshot is not None:
            last = snapshot.last_success
            last_at = (last.finished_at or last.started_at).timestamp() if last else 0.0
            yield GaugeMetricFamily("askdocs_pages", "Current pages in the knowledge base", value=snapshot.pages)
            yield GaugeMetricFamily("askdocs_chunks", "Chunks in the knowledge base", value=snapshot.chunks)
            pages = GaugeMetricFamily("askdocs_space_pages", "Current pages per space", labels=["space_key"])
            chunks = GaugeMetricFamily("askdocs_space_chunks", "Chunks per space", labels=["space_key"])
            for space in snapshot.spaces:
                pages.add_metric([space.space_key], space.pages)
                chunks.add_metric([space.space_key], space.chunks)
            yield pages
            yield chunks
            yield GaugeMetricFamily("askdocs_last_successful_sync_timestamp_seconds",
                                    "Unix time the last successful sync finished (0: never)", value=last_at)
            yield GaugeMetricFamily("askdocs_sync_running", "1 while a sync run holds the lock",
                                    value=0 if snapshot.running_sync is None else 1)
        if self._next_sync_at is not None:
            yield GaugeMetricFamily("askdocs_next_sync_timestamp_seconds", "Unix time of the next scheduled sync",
                                    value=self._next_sync_at.timestamp())
