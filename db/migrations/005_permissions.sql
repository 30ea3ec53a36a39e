-- Issue 15: who may read what (CONFLUENCE_PERMISSIONS=per-user). Forward-only: never edit once merged.
-- Principals are 'user:<accountId>' and 'group:<groupId>' as Confluence Cloud names them.

-- Who the space permissions let read a space; org_wide: the all-users group (CONFLUENCE_ALL_USERS_GROUP) may.
CREATE TABLE space_access (
    space_key  text PRIMARY KEY REFERENCES spaces (space_key) ON DELETE CASCADE,
    principals text[]      NOT NULL DEFAULT '{}',
    org_wide   boolean     NOT NULL DEFAULT false,
    checked_at timestamptz NOT NULL DEFAULT now()
);

-- A page without a row here, or with readable = false (its permissions could not be read), is used for nobody.
-- org_wide: its space is org-wide and neither it nor any ancestor carries a read restriction.
CREATE TABLE page_access (
    page_id    text PRIMARY KEY REFERENCES pages (page_id) ON DELETE CASCADE,
    readable   boolean     NOT NULL,
    org_wide   boolean     NOT NULL DEFAULT false,
    error      text,
    checked_at timestamptz NOT NULL DEFAULT now()
);

-- Every read restriction on a page or one of its ancestors (source_id): a reader must be named in each one,
-- directly or through a group, besides being allowed by the space.
CREATE TABLE page_restrictions (
    page_id    text   NOT NULL REFERENCES pages (page_id) ON DELETE CASCADE,
    source_id  text   NOT NULL,
    principals text[] NOT NULL,
    PRIMARY KEY (page_id, source_id)
);

CREATE TABLE confluence_groups (
    group_id   text PRIMARY KEY,
    name       text        NOT NULL,
    checked_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE group_members (
    group_id   text NOT NULL REFERENCES confluence_groups (group_id) ON DELETE CASCADE,
    account_id text NOT NULL,
    PRIMARY KEY (group_id, account_id)
);
CREATE INDEX group_members_account_id_idx ON group_members (account_id);

-- Confluence accounts met in groups and permissions, with the email that maps a Slack user to them.
CREATE TABLE confluence_accounts (
    account_id text PRIMARY KEY,
    email      text,
    checked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX confluence_accounts_email_idx ON confluence_accounts (lower(email));
