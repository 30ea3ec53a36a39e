"""Who may read each indexed page (CONFLUENCE_PERMISSIONS=per-user, issue 15), re-read without refetching content.

Effective read access of a page = the space's read permission ∩ the read restrictions of the page and of every
ancestor (users or groups); no restriction = the space's permission (Atlassian: "Page restrictions"). Cloud
names principals by account id and group id; askdocs stores them as 'user:<accountId>' and 'group:<groupId>'.

Cost of one refresh of a space of N pages (no bodies): one v2 space-permissions listing, ⌈N/100⌉ CQL pages
with the restrictions and ancestors expanded (v2 has no restrictions), one group listing, one member listing
per group named, and one email lookup per 100 accounts. A page missing from the CQL answer (a search index
behind) costs its own reads. A restriction added without an edit changes no version, so nothing cheaper
(a version diff) can find it: the restrictions are read again on every refresh.

Fail closed: a page whose restrictions (or an ancestor's) can't be read is stored as unreadable with the
reason, so no one's answer uses it until a later refresh reads them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from ingest.confluence_content import ContentApi
from ingest.errors import ConfluenceError

logger = logging.getLogger(__name__)

JSON = dict[str, Any]
RESTRICTION_EXPAND = "ancestors,restrictions.read.restrictions.user,restrictions.read.restrictions.group"
CQL_PAGE_SIZE = 100  # Atlassian's cap for v1 search
EMAIL_BATCH = 100


@dataclass(frozen=True)
class ContentRestrictions:
    """One page's own read restrictions (None: none) and its ancestors' ids, root first."""

    page_id: str
    principals: frozenset[str] | None
    ancestor_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class PageAccess:
    """What a refresh stores for one page: the restriction sets a reader must each be in, or why not known."""

    page_id: str
    readable: bool
    org_wide: bool = False
    restrictions: tuple[tuple[str, frozenset[str]], ...] = ()  # (source page id, principals)
    error: str | None = None


@dataclass
class PermissionReport:
    """What one refresh did: pages checked, the ones used for nobody and why, requests made."""

    spaces: list[str] = field(default_factory=list)
    pages_checked: int = 0
    restricted_pages: int = 0
    org_wide_pages: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)  # page id -> reason
    groups: int = 0
    accounts: int = 0
    failed_spaces: dict[str, str] = field(default_factory=dict)


def principals_of(restrictions: JSON) -> frozenset[str] | None:
    """`restrictions.read.restrictions` (or a byOperation answer's `restrictions`) → principals; None when the
    restriction names no one (no restriction)."""
    found: set[str] = set()
    for user in restrictions.get("user", {}).get("results") or []:
        account = user.get("accountId") or user.get("userKey") or user.get("username")
        if account:
            found.add(f"user:{account}")
    for group in restrictions.get("group", {}).get("results") or []:
        ident = group.get("id") or group.get("name")
        if ident:
            found.add(f"group:{ident}")
    return frozenset(found) or None


def space_read_principals(assignments: Iterable[JSON]) -> frozenset[str]:
    """v2 space permission assignments → who may read the space (operation read on target space)."""
    found: set[str] = set()
    for item in assignments:
        operation, principal = item.get("operation") or {}, item.get("principal") or {}
        if operation.get("key") == "read" and operation.get("targetType") == "space":
            if principal.get("type") in ("user", "group") and principal.get("id"):
                found.add(f"{principal['type']}:{principal['id']}")
    return frozenset(found)


def effective_access(
    page_id: str, known: dict[str, ContentRestrictions], *, space_org_wide: bool,
) -> PageAccess:
    """Pure: a page's restriction sets (its own and every ancestor's); unreadable if any is unknown."""
    entry = known.get(page_id)
    if entry is None:
        return PageAccess(page_id, readable=False, error="its read restrictions could not be read")
    sets: list[tuple[str, frozenset[str]]] = []
    for source_id in (*entry.ancestor_ids, page_id):
        source = known.get(source_id)
        if source is None:
            return PageAccess(page_id, readable=False,
                              error=f"the read restrictions of its ancestor {source_id} could not be read")
        if source.principals is not None:
            sets.append((source_id, source.principals))
    return PageAccess(page_id, readable=True, org_wide=space_org_wide and not sets, restrictions=tuple(sets))


class PermissionStore(Protocol):
    """What a refresh needs of the database (db.store.AccessStore satisfies it)."""

    async def indexed_pages(self, space_key: str) -> list[str]: ...
    async def save_space_access(
        self, space_key: str, principals: frozenset[str], *, org_wide: bool, pages: Sequence[PageAccess],
    ) -> None: ...
    async def save_directory(
        self, groups: dict[str, str], members: dict[str, list[str]], emails: dict[str, str | None],
    ) -> None: ...


class PermissionApi(ContentApi):
    """ConfluenceClient's permission reads (v2 space permissions; v1 CQL, restrictions, groups, emails)."""

    async def space_permissions(self, space_key: str) -> frozenset[str]:
        """Who may read the space: `GET /api/v2/spaces/{id}/permissions` (Cloud only)."""
        if not self.is_cloud:
            raise ConfluenceError(501, space_key, "space permissions are read through REST v2 (Cloud only)")
        space_id = self._space_ids.get(space_key) or (await self.get_space(space_key)).space_id
        url = self._url(f"/api/v2/spaces/{quote(space_id, safe='')}/permissions", {"limit": 250})
        return space_read_principals([item async for item in self._paginate(url, v2=True)])

    async def space_restrictions(self, space_key: str) -> dict[str, ContentRestrictions]:
        """Every page's and blog post's own read restrictions and ancestors, through CQL search pages."""
        found: dict[str, ContentRestrictions] = {}
        for kind in ("page", "blogpost"):
            cql = f'space = "{space_key}" and type = {kind}'
            url = self._url("/rest/api/content/search",
                            {"cql": cql, "expand": RESTRICTION_EXPAND, "limit": CQL_PAGE_SIZE})
            async for item in self._paginate(url, v2=False):
                entry = _restrictions_entry(item)
                found[entry.page_id] = entry
        return found

    async def page_restrictions(self, page_id: str) -> ContentRestrictions:
        """One page's restrictions and ancestors, for a page the search didn't return."""
        url = self._url(f"/rest/api/content/{quote(page_id, safe='')}/restriction/byOperation/read",
                        {"expand": "restrictions.user,restrictions.group"})
        own = principals_of((await self._get_json(url)).get("restrictions") or {})
        ancestors: tuple[str, ...] = ()
        if self.is_cloud:
            data = await self._get_json(self._url(f"/api/v2/pages/{quote(page_id, safe='')}/ancestors", {}))
            ancestors = tuple(str(a["id"]) for a in data.get("results") or [])
        return ContentRestrictions(page_id, own, ancestors)

    async def groups(self) -> dict[str, str]:
        """Every group: id → name."""
        url = self._url("/rest/api/group", {"limit": 200})
        return {str(g.get("id") or g["name"]): str(g["name"]) async for g in self._paginate(url, v2=False)}

    async def group_members(self, group_id: str) -> list[str]:
        """Account ids of a group's members."""
        url = self._url(f"/rest/api/group/{quote(group_id, safe='')}/membersByGroupId", {"limit": 200})
        return [str(u["accountId"]) async for u in self._paginate(url, v2=False) if u.get("accountId")]

    async def user_emails(self, account_ids: Sequence[str]) -> dict[str, str]:
        """Emails of these accounts (`/user/email/bulk`; an account hiding its email is left out)."""
        emails: dict[str, str] = {}
        for start in range(0, len(account_ids), EMAIL_BATCH):
            batch = account_ids[start : start + EMAIL_BATCH]
            url = self._url("/rest/api/user/email/bulk?" + urlencode([("accountId", a) for a in batch]), {})
            records = (await self._get_json(url)).get("results") or []  # a bare array, as `results`
            emails.update({str(r["accountId"]): str(r["email"]) for r in records if r.get("email")})
        return emails


def _restrictions_entry(item: JSON) -> ContentRestrictions:
    restrictions = ((item.get("restrictions") or {}).get("read") or {}).get("restrictions") or {}
    ancestors = tuple(str(a["id"]) for a in item.get("ancestors") or [])
    return ContentRestrictions(str(item["id"]), principals_of(restrictions), ancestors)


class PermissionSource(Protocol):
    async def space_permissions(self, space_key: str) -> frozenset[str]: ...
    async def space_restrictions(self, space_key: str) -> dict[str, ContentRestrictions]: ...
    async def page_restrictions(self, page_id: str) -> ContentRestrictions: ...
    async def groups(self) -> dict[str, str]: ...
    async def group_members(self, group_id: str) -> list[str]: ...
    async def user_emails(self, account_ids: Sequence[str]) -> dict[str, str]: ...


async def refresh_permissions(
    spaces: Sequence[str], *, source: PermissionSource, store: PermissionStore, all_users_group: str,
) -> PermissionReport:
    """Re-read who may read every indexed page of these spaces, and the groups and accounts they name."""
    report = PermissionReport(spaces=list(spaces))
    try:
        groups = await source.groups()
    except ConfluenceError as error:  # no memberships, no answer: every page waits for the next refresh
        await _fail_all(spaces, f"Confluence groups could not be read: {error}", store=store, report=report)
        return report
    all_users = {gid for gid, name in groups.items() if name == all_users_group} or {all_users_group}
    named: set[str] = set()
    for space_key in spaces:
        pages = await store.indexed_pages(space_key)
        try:
            readers = await source.space_permissions(space_key)
            known = await source.space_restrictions(space_key)
        except (ConfluenceError, KeyError, TypeError, ValueError) as error:  # fail closed: the whole space waits
            await _fail_all([space_key], f"permissions of space {space_key} could not be read: {error}",
                            store=store, report=report)
            continue
        await _read_missing(pages, known, source=source)
        org_wide = bool(readers & {f"group:{g}" for g in all_users})
        access = [effective_access(page_id, known, space_org_wide=org_wide) for page_id in pages]
        for item in access:
            if not item.readable:
                report.unreadable[item.page_id] = item.error or "unknown"
            report.restricted_pages += bool(item.restrictions)
            report.org_wide_pages += item.org_wide
            named.update(p for _, ps in item.restrictions for p in ps)
        named.update(readers)
        report.pages_checked += len(pages)
        await store.save_space_access(space_key, readers, org_wide=org_wide, pages=access)
    group_ids = sorted({p.removeprefix("group:") for p in named if p.startswith("group:")} | all_users)
    try:
        members = {gid: await source.group_members(gid) for gid in group_ids if gid in groups}
        accounts = sorted({a for ids in members.values() for a in ids}
                          | {p.removeprefix("user:") for p in named if p.startswith("user:")})
        found = await source.user_emails(accounts) if accounts else {}
    except ConfluenceError as error:  # who is in which group is unknown: so is who may read a restricted page
        await _fail_all(spaces, f"group members or emails could not be read: {error}", store=store, report=report)
        return report
    await store.save_directory({g: groups[g] for g in members}, members, {a: found.get(a) for a in accounts})
    report.groups, report.accounts = len(members), len(accounts)
    logger.info("permissions of %s re-read: %d pages, %d restricted, %d used by nobody", ", ".join(spaces),
                report.pages_checked, report.restricted_pages, len(report.unreadable))
    return report


async def _fail_all(spaces: Sequence[str], reason: str, *, store: PermissionStore, report: PermissionReport) -> None:
    """Every indexed page of these spaces used for nobody, with the reason (fail closed)."""
    for space_key in spaces:
        pages = await store.indexed_pages(space_key)
        report.failed_spaces[space_key] = reason
        report.unreadable.update({page_id: reason for page_id in pages})
        await store.save_space_access(space_key, frozenset(), org_wide=False,
                                      pages=[PageAccess(p, readable=False, error=reason) for p in pages])
    logger.warning("%s", reason)


async def _read_missing(
    pages: Sequence[str], known: dict[str, ContentRestrictions], *, source: PermissionSource
) -> None:
    """Pages (and their ancestors) the search left out: read one by one; a failure leaves them unknown."""
    queue = [p for p in pages if p not in known]
    tried: set[str] = set()
    while queue:
        page_id = queue.pop()
        if page_id in tried:
            continue
        tried.add(page_id)
        try:
            known[page_id] = await source.page_restrictions(page_id)
        except ConfluenceError as error:
            logger.warning("read restrictions of page %s could not be read: %s", page_id, error)
            continue
        queue.extend(a for a in known[page_id].ancestor_ids if a not in known)
