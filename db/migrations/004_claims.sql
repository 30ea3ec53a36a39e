-- Work that exactly one replica may do (issue 16): a row per claimed unit, e.g. "knowledge gaps digest 2026-W49".
-- The first INSERT wins; the others see the conflict and skip.
CREATE TABLE claims (
    claim      text        PRIMARY KEY,
    claimed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX claims_claimed_at_idx ON claims (claimed_at);
