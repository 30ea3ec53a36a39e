"""build_services(settings): turn settings into the running parts (database, models, sync, answers)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass

from bot.answering.chat import ChatModel, OpenAIChat
from bot.answering.engine import AnswerEngine
from bot.answering.evidence import evidence_policy
from bot.answering.freshness import FreshnessChecker
from bot.operations.identity import Identity
from bot.operations.metrics import Metrics
from bot.operations.sync_runner import RunOutcome, SyncRunner
from bot.settings import Settings, SettingsError
from db.connect import Database, open_database
from ingest.attachments import AttachmentOptions
from ingest.confluence import ConfluenceClient, RetryPolicy
from ingest.embedders import Embedder
from ingest.sync import PageSource, SyncOptions

logger = logging.getLogger(__name__)

@dataclass
class Services:
    settings: Settings
    database: Database
    embedder: Embedder
    chat: ChatModel | None
    engine: AnswerEngine
    sync: SyncRunner
    metrics: Metrics
    identity: Identity  # who may read what (issue 15)
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


def confluence_factory(settings: Settings, *, retry: RetryPolicy = RetryPolicy()) -> ConfluenceClient:
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
        max_concurrency=settings.confluence_max_concurrency, retry=retry, cloud_id=settings.confluence_cloud_id,
    )


@asynccontextmanager
async def build_services(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    confluence_retry: RetryPolicy = RetryPolicy(),
    reembed_on_model_change: bool = False,
) -> AsyncIterator[Services]:
    """Everything askdocs runs on. `embedder` and `confluence_retry` let tests shrink waits, not paths.

    `reembed_on_model_change`: for the commands that sync (run, sync, demo), a knowledge base built with
    another embedding model is emptied of its embeddings and re-embedded by the sync instead of refused.
    """
    embedder = embedder or build_embedder(settings)
    probe = getattr(embedder, "probe_dimension", None)
    if probe is not None:
        await probe()
    dsn = settings.database_url.get_secret_value() if settings.database_url else None
    database = await open_database(
        dsn, data_dir=settings.askdocs_data_dir, embedding_model=embedder.model_name,
        embedding_dimension=embedder.dimension, reembed_on_model_change=reembed_on_model_change,
    )
    chat = build_chat(settings)
    metrics = Metrics()
    engine = AnswerEngine(
        pool=database.pool, embedder=embedder, chat=chat, evidence=evidence_policy(embedder.model_name),
        observer=metrics, rewrite_queries=settings.llm_query_rewrite,
    )
    runner = SyncRunner(
        pool=database.pool, embedder=embedder,
        source_factory=lambda: confluence_factory(settings, retry=confluence_retry),
        default_spaces=settings.confluence_spaces,
        # per-user: every page is indexed, restricted ones too; each answer uses only what its audience may read.
        all_users_group=settings.confluence_all_users_group if settings.per_user_permissions else None,
        options=SyncOptions(
            include_restricted=settings.confluence_include_restricted or settings.per_user_permissions,
            max_delete_fraction=settings.sync_max_delete_fraction,
            concurrency=settings.confluence_max_concurrency,
            include_attachments=settings.confluence_include_attachments,
            include_comments=settings.confluence_include_comments,
            include_blogposts=settings.confluence_include_blogposts,
            attachments=AttachmentOptions(
                max_bytes=int(settings.confluence_attachment_max_mb * 1024 * 1024),
                types=tuple(settings.confluence_attachment_types),
            ),
        ),
    )

    async def count_run(outcome: RunOutcome) -> None:
        metrics.sync_finished(status=outcome.status, seconds=outcome.duration_s, counters=outcome.counters())

    runner.on_finished(count_run)
    freshness = None
    freshness_client: ConfluenceClient | None = None
    if settings.confluence_configured:
        # One client, so one HTTP session, for every answer's check (a session per answer: issue 16).
        shared = freshness_client = confluence_factory(settings, retry=confluence_retry)

        def shared_source() -> AbstractAsyncContextManager[PageSource]:
            return nullcontext(shared)

        freshness = FreshnessChecker(source_factory=shared_source, runner=runner)
    identity = Identity(database.pool, per_user=settings.per_user_permissions)
    services = Services(settings, database, embedder, chat, engine, runner, metrics, identity, freshness)
    try:
        yield services
    finally:
        await runner.cancel()
        if freshness is not None:
            await freshness.aclose()
        if freshness_client is not None:
            await freshness_client.close()
        if chat is not None:
            await getattr(chat, "aclose", _noop)()
        await embedder.aclose()
        await database.close()


async def _noop() -> None:
    return None
