"""Named queries: who may read what (issue 15, CONFLUENCE_PERMISSIONS=per-user). The caller owns the transaction.

Read by db/search.py's audience filter: page_access (readable, org_wide), space_access, page_restrictions and
group_members. A page without a page_access row is used for nobody.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import asyncpg

INDEXED_PAGES = "SELECT page_id FROM pages WHERE space_key = $1 ORDER BY page_id"
UPSERT_SPACE_ACCESS = """
INSERT INTO space_access (space_key, principals, org_wide, checked_at) VALUES ($1, $2, $3, now())
ON CONFLICT (space_key) DO UPDATE
   SET principals = EXCLUDED.principals, org_wide = EXCLUDED.org_wide, checked_at = now()
"""
DELETE_SPACE_RESTRICTIONS = """
DELETE FROM page_restrictions r USING pages p WHERE r.page_id = p.page_id AND p.space_key = $1
"""
UPSERT_PAGE_ACCESS = """
INSERT INTO page_access (page_id, readable, org_wide, error, checked_at)
SELECT $1, $2, $3, $4, now() WHERE EXISTS (SELECT 1 FROM pages WHERE page_id = $1)
ON CONFLICT (page_id) DO UPDATE
   SET readable = EXCLUDED.readable, org_wide = EXCLUDED.org_wide, error = EXCLUDED.error, checked_at = now()
"""
INSERT_RESTRICTION = """
INSERT INTO page_restrictions (page_id, source_id, principals)
SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM pages WHERE page_id = $1)
"""
UPSERT_GROUP = """
INSERT INTO confluence_groups (group_id, name, checked_at) VALUES ($1, $2, now())
ON CONFLICT (group_id) DO UPDATE SET name = EXCLUDED.name, checked_at = now()
"""
DELETE_GROUP_MEMBERS = "DELETE FROM group_members WHERE group_id = $1"
INSERT_GROUP_MEMBER = "INSERT INTO group_members (group_id, account_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
UPSERT_ACCOUNT = """
INSERT INTO confluence_accounts (account_id, email, checked_at) VALUES ($1, $2, now())
ON CONFLICT (account_id) DO UPDATE SET email = coalesce(EXCLUDED.email, confluence_accounts.email), checked_at = now()
"""
ACCOUNT_BY_EMAIL = """
SELECT account_id FROM confluence_accounts WHERE lower(email) = lower($1) ORDER BY account_id LIMIT 2
"""


async def indexed_pages(conn: asyncpg.Connection, space_key: str) -> list[str]:
    return [r["page_id"] for r in await conn.fetch(INDEXED_PAGES, space_key)]


async def save_space_access(
    conn: asyncpg.Connection, space_key: str, principals: Collection[str], *, org_wide: bool,
    pages: Sequence[tuple[str, bool, bool, str | None, Sequence[tuple[str, Sequence[str]]]]],
) -> None:
    """Replace a space's access and its pages' (page id, readable, org_wide, error, restrictions)."""
    await conn.execute(UPSERT_SPACE_ACCESS, space_key, sorted(principals), org_wide)
    await conn.execute(DELETE_SPACE_RESTRICTIONS, space_key)
    await conn.executemany(UPSERT_PAGE_ACCESS, [(p, readable, wide, error) for p, readable, wide, error, _ in pages])
    await conn.executemany(INSERT_RESTRICTION, [
        (p, source, sorted(principals)) for p, _, _, _, sets in pages for source, principals in sets
    ])


async def save_directory(
    conn: asyncpg.Connection, groups: dict[str, str], members: dict[str, list[str]],
    emails: dict[str, str | None],
) -> None:
    """Replace the members of these groups; record accounts with their emails."""
    for group_id, name in groups.items():
        await conn.execute(UPSERT_GROUP, group_id, name)
        await conn.execute(DELETE_GROUP_MEMBERS, group_id)
        await conn.executemany(INSERT_GROUP_MEMBER, [(group_id, a) for a in members.get(group_id, [])])
    await conn.executemany(UPSERT_ACCOUNT, list(emails.items()))


async def account_by_email(conn: asyncpg.Connection, email: str) -> str | None:
    """The one Confluence account with this email; None when there is none, or more than one (ambiguous)."""
    rows = await conn.fetch(ACCOUNT_BY_EMAIL, email)
    return rows[0]["account_id"] if len(rows) == 1 else None
