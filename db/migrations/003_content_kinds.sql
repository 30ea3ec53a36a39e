-- Issue 14: blog posts, comments and attachments beside page bodies. Forward-only.

-- 'page' or 'blogpost': a blog post is indexed, cited and deleted like a page (its id is the page_id).
ALTER TABLE pages ADD COLUMN content_type text NOT NULL DEFAULT 'page';
-- Comments carry their own versions (adding one doesn't change the page's): the fingerprint of the page's
-- indexed comments ("id:version" of each) tells the next sync to re-read them. '' = none indexed or unknown.
ALTER TABLE pages ADD COLUMN comments_fingerprint text NOT NULL DEFAULT '';
ALTER TABLE pages ADD COLUMN comment_count integer NOT NULL DEFAULT 0;
-- Ids of pages whose content this page inlines (include / excerpt-include): re-indexed when one changes.
ALTER TABLE pages ADD COLUMN includes text[] NOT NULL DEFAULT '{}';

-- Files attached to indexed pages. Their chunks sit in `chunks` with the page's page_id and this id, so a
-- page deleted takes its files with it, and a page re-indexed keeps them.
CREATE TABLE attachments (
    attachment_id text PRIMARY KEY,
    page_id       text        NOT NULL REFERENCES pages (page_id) ON DELETE CASCADE,
    space_key     text        NOT NULL,
    title         text        NOT NULL,          -- the file name
    media_type    text        NOT NULL DEFAULT '',
    file_size     bigint      NOT NULL DEFAULT 0,
    version       integer     NOT NULL,
    url           text        NOT NULL,
    status        text        NOT NULL DEFAULT 'indexed'
        CHECK (status IN ('indexed', 'skipped', 'failed')),
    error         text,
    synced_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attachments_page_id_idx ON attachments (page_id);
CREATE INDEX attachments_space_key_idx ON attachments (space_key);

ALTER TABLE chunks ADD COLUMN attachment_id text REFERENCES attachments (attachment_id) ON DELETE CASCADE;
CREATE INDEX chunks_attachment_id_idx ON chunks (attachment_id) WHERE attachment_id IS NOT NULL;
-- A page's chunk_index runs over its body and comments; each file numbers its own chunks.
ALTER TABLE chunks DROP CONSTRAINT chunks_page_id_chunk_index_key;
CREATE UNIQUE INDEX chunks_page_chunk_idx ON chunks (page_id, coalesce(attachment_id, ''), chunk_index);
