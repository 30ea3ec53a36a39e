"""build_services(settings): turn settings into the running parts (database, models, sync, answers)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from bot.answer import AnswerEngine
from bot.freshness import FreshnessChecker
from bot.llm import ChatModel, OpenAIChat
from bot.metrics import Metrics
from bot.ranking import EvidencePolicy
from bot.settings import Settings, SettingsError
from bot.sync_runner import RunOutcome, SyncRunner
from db.connect import Database, open_database
from ingest.confluence import ConfluenceClient, RetryPolicy
from ingest.embedders import Embedder
from ingest.sync import PageSource, SyncOptions

logger = logging.getLogger(__name__)

# Where each embedding model's cosine similarities put "no evidence" and "clearly relevant".
EVIDENCE_BY_MODEL = {
    "all-MiniLM-L6-v2": EvidencePolicy(refuse_below=0.35, confident_above=0.45, min_term_coverage=0.5),
    "text-embedding-3-small": EvidencePolicy(refuse_below=0.20, confident_above=0.45),
}


def evidence_policy(model: str) -> EvidencePolicy:
    return EVIDENCE_BY_MODEL.get(model, EvidencePolicy(refuse_below=0.15, confident_above=0.5))


@dataclass
class Services:
    settings: Settings
    database: Database
    embedder: Embedder
    chat: ChatModel | None
    engine: AnswerEngine
    sync: SyncRunner
    metrics: Metrics
    freshness: FreshnessChecker | None = None


def build_embedder(settings: Settings) -> Embedder:
    if settings.embedding_provider == "openai":
        from ingest.embedders.openai import OpenAIEmbedder

        assert settings.openai_api_key is not None  # Settings refuses openai without a key
        return OpenAIEmbedder(
            api_key=settings.openai_api_key.get_secret_value(), base_url=settings.openai_base_url,
            model=settings.resolved_embedding_model,
        )
    from ingest.embedders.local import LocalEmbedder

    return LocalEmbedder(None if settings.embedding_model in (None, "all-MiniLM-L6-v2") else settings.embedding_model)


def build_chat(settings: Settings) -> ChatModel | None:
    if settings.llm_provider != "openai":
        return None
    assert settings.openai_api_key is not None
    return OpenAIChat(
        api_key=settings.openai_api_key.get_secret_value(), base_url=settings.openai_base_url,
        model=settings.llm_model,
    )


def confluence_factory(
    settings: Settings, *, retry: RetryPolicy = RetryPolicy()
) -> AbstractAsyncContextManager[PageSource]:
    """A fresh client per sync run (its aiohttp session lives as long as the run)."""
    if not settings.confluence_configured:
        raise SettingsError(
            "configuration error: CONFLUENCE_BASE_URL with CONFLUENCE_EMAIL + CONFLUENCE_API_TOKEN "
            "(Cloud) or CONFLUENCE_PAT (Data Center) must be set to sync"
        )
    assert settings.confluence_base_url is not None
    if settings.confluence_pat is not None:
        return ConfluenceClient(
            settings.confluence_base_url, pat=settings.confluence_pat.get_secret_value(),
            max_concurrency=settings.confluence_max_concurrency, retry=retry,
        )
    assert settings.confluence_api_token is not None
    return ConfluenceClient(
        settings.confluence_base_url, email=settings.confluence_email,
        api_token=settings.confluence_api_token.get_secret_value(),
        max_concurrency=settings.confluence_max_concurrency, retry=retry,
    )


@asynccontextmanager
async def build_services(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    confluence_retry: RetryPolicy = RetryPolicy(),
) -> AsyncIterator[Services]:
    """Everything askdocs runs on. `embedder` and `confluence_retry` let tests shrink waits, not paths."""
    embedder = embedder or build_embedder(settings)
    probe = getattr(embedder, "probe_dimension", None)
    if probe is not None:
        await probe()
    dsn = settings.database_url.get_secret_value() if settings.database_url else None
    database = await open_database(
        dsn, data_dir=settings.askdocs_data_dir, embedding_model=embedder.model_name,
        embedding_dimension=embedder.dimension,
    )
    chat = build_chat(settings)
    metrics = Metrics()
    engine = AnswerEngine(
        pool=database.pool, embedder=embedder, chat=chat, evidence=evidence_policy(embedder.model_name),
        metrics=metrics,
    )
    runner = SyncRunner(
        pool=database.pool, embedder=embedder,
        source_factory=lambda: confluence_factory(settings, retry=confluence_retry),
        default_spaces=settings.confluence_spaces,
        options=SyncOptions(
            include_restricted=settings.confluence_include_restricted,
            max_delete_fraction=settings.sync_max_delete_fraction,
            concurrency=settings.confluence_max_concurrency,
        ),
    )

    async def count_run(outcome: RunOutcome) -> None:
        metrics.inc("askdocs_sync_runs_total", help="Sync runs by final status", status=outcome.status)
        metrics.observe("askdocs_sync_duration_seconds", outcome.duration_s, help="Sync run duration")
        for name in ("pages_added", "pages_updated", "pages_deleted", "pages_failed", "chunks_embedded",
                     "chunks_reused", "embedding_tokens", "bodies_fetched"):
            metrics.inc(f"askdocs_sync_{name}_total", getattr(outcome.report, name))

    runner.on_finished(count_run)
    freshness = None
    if settings.confluence_configured:
        freshness = FreshnessChecker(
            source_factory=lambda: confluence_factory(settings, retry=confluence_retry), runner=runner
        )
    services = Services(settings, database, embedder, chat, engine, runner, metrics, freshness)
    try:
        yield services
    finally:
        await runner.cancel()
        if freshness is not None:
            await freshness.aclose()
        if chat is not None:
            await getattr(chat, "aclose", _noop)()
        await embedder.aclose()
        await database.close()


async def _noop() -> None:
    return None
