-- askdocs schema, version 1. Forward-only: never edit once merged; add 002_… instead.
CREATE EXTENSION IF NOT EXISTS vector;

-- Which embedding model filled chunks.embedding, and its dimension. One row; written on first start.
CREATE TABLE embedding_config (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    model      text        NOT NULL,
    dimension  integer     NOT NULL CHECK (dimension > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE spaces (
    space_key      text PRIMARY KEY,
    space_id       text,
    name           text,
    url            text,
    last_synced_at timestamptz
);

CREATE TABLE pages (
    page_id       text PRIMARY KEY,
    space_key     text        NOT NULL REFERENCES spaces (space_key),
    title         text        NOT NULL,
    url           text        NOT NULL,
    version       integer     NOT NULL,
    ancestors     text[]      NOT NULL DEFAULT '{}',
    labels        text[]      NOT NULL DEFAULT '{}',
    status        text        NOT NULL DEFAULT 'current',
    restricted    boolean     NOT NULL DEFAULT false,
    checksum      text        NOT NULL,
    last_modified timestamptz,
    synced_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pages_space_key_idx ON pages (space_key);

-- The vector column gets its dimension from embedding_config when the database is first bound to a model
-- (db/migrate.py: bind_embedding_model), so one schema serves 384-dim MiniLM and 1536-dim OpenAI models.
CREATE TABLE chunks (
    id           bigserial PRIMARY KEY,
    page_id      text        NOT NULL REFERENCES pages (page_id) ON DELETE CASCADE,
    space_key    text        NOT NULL,
    chunk_index  integer     NOT NULL,
    heading_path text[]      NOT NULL DEFAULT '{}',
    content      text        NOT NULL,
    content_hash text        NOT NULL,
    token_count  integer     NOT NULL,
    embedding    vector      NOT NULL,
    tsv          tsvector    NOT NULL,
    UNIQUE (page_id, chunk_index)
);
CREATE INDEX chunks_content_hash_idx ON chunks (content_hash);
CREATE INDEX chunks_space_key_idx ON chunks (space_key);
CREATE INDEX chunks_tsv_idx ON chunks USING gin (tsv);

CREATE TABLE sync_runs (
    id           bigserial PRIMARY KEY,
    trigger      text        NOT NULL,          -- schedule | slack | api | cli | freshness
    requested_by text,
    spaces       text[]      NOT NULL DEFAULT '{}',
    force        boolean     NOT NULL DEFAULT false,
    status       text        NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'succeeded', 'partial', 'failed')),
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    counters     jsonb       NOT NULL DEFAULT '{}',
    error        text
);
CREATE INDEX sync_runs_started_at_idx ON sync_runs (started_at DESC);

CREATE TABLE sync_failures (
    id        bigserial PRIMARY KEY,
    run_id    bigint      NOT NULL REFERENCES sync_runs (id) ON DELETE CASCADE,
    page_id   text        NOT NULL,
    space_key text,
    title     text,
    url       text,
    error     text        NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sync_failures_run_id_idx ON sync_failures (run_id);

CREATE TABLE query_log (
    id                  bigserial PRIMARY KEY,
    asked_at            timestamptz NOT NULL DEFAULT now(),
    surface             text        NOT NULL,   -- slack | cli | api | eval
    user_id             text,
    channel_id          text,
    thread_ts           text,
    question            text        NOT NULL,
    standalone_question text,
    answer              text        NOT NULL DEFAULT '',
    refused             boolean     NOT NULL DEFAULT false,
    sources             jsonb       NOT NULL DEFAULT '[]',
    top_score           double precision,
    latency_ms          integer,
    error               text
);
CREATE INDEX query_log_asked_at_idx ON query_log (asked_at DESC);

CREATE TABLE feedback (
    id         bigserial PRIMARY KEY,
    query_id   bigint      NOT NULL REFERENCES query_log (id) ON DELETE CASCADE,
    user_id    text        NOT NULL,
    value      smallint    NOT NULL CHECK (value IN (-1, 1)),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (query_id, user_id)
);
