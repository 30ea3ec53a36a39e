"""SampleConfluence: an aiohttp server speaking Confluence's REST JSON, with editable state.

`askdocs demo` serves the sample space with it; the tests' emulator (tests/emulators/confluence.py) adds
fault injection on top and drives the real ConfluenceClient against it.
Cloud paths live under `/wiki` (REST v2 listings with cursors in `_links.next` and `Link`, v1 content and
CQL search with cursors), Data Center paths under `/rest/api` (v1, `start`/`limit`). Basic auth
(email:token) guards Cloud paths, Bearer PAT guards Data Center paths. Every request is recorded.

Over 400 lines on purpose: one in-memory site answering both API generations (v1, v2) and both deployments
(Cloud, Data Center) from the same state. Beyond page bodies (issue 14): blog posts, footer and inline comments,
attachments with their bytes, users, the 410 Gone of Cloud's deprecated v1 content GET (`v1_content_gone`),
the api.atlassian.com gateway prefix `/ex/confluence/{cloudId}` (whose next links drop the prefix) and the
404 of the ancestors' restrictions expand under a draft or trashed ancestor.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from functools import partial
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote_plus, urlencode

from aiohttp import web

from bot.demo.confluence_permissions import ALL_USERS, PermissionState

JSON = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

V2_DEFAULT_LIMIT, V2_MAX_LIMIT = 25, 250
V1_DEFAULT_LIMIT, V1_MAX_LIMIT, V1_MAX_LIMIT_WITH_BODY = 25, 100, 50
_OWNER = {"type": "known", "accountId": "5b10ac8d82e05b22cc7d4ef5", "displayName": "Page Owner"}


@dataclass
class EmulatedSpace:
    space_id: str
    key: str
    name: str


@dataclass
class EmulatedPage:
    page_id: str
    space_key: str
    title: str
    body: str
    parent_id: str | None
    labels: tuple[str, ...]
    restricted: bool
    version: int
    created: datetime
    modified: datetime
    status: str = "current"
    forbidden: bool = False
    kind: str = "page"  # or "blogpost"
    # An ancestor that is a draft or in the trash: the `ancestors.restrictions…` expand of its descendants
    # and its own restriction read answer 404 (Atlassian CONFCLOUD-77618).
    breaks_expand: bool = False


@dataclass
class EmulatedComment:
    comment_id: str
    page_id: str
    body: str
    author_id: str
    kind: str  # "footer" | "inline"
    resolution: str  # inline: "open" | "resolved" | "reopened" | "dangling"; footer: ""
    version: int
    created: datetime
    modified: datetime


@dataclass
class EmulatedAttachment:
    attachment_id: str
    page_id: str
    title: str
    media_type: str
    data: bytes
    version: int
    created: datetime


@dataclass
class EmulatedUser:
    account_id: str
    display_name: str
    username: str
    user_key: str
    email: str = ""


@dataclass
class _Query:
    """A parsed CQL query: the few clauses askdocs sends."""

    space: str | None = None
    type: str | None = None
    modified_from: datetime | None = None
    ids: set[str] | None = field(default=None)


def _iso(moment: datetime, *, cloud: bool) -> str:
    """Confluence timestamps: milliseconds, `Z` on Cloud, a numeric offset on Data Center."""
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z") if cloud else text


def _id_key(page_id: str) -> tuple[int, str]:
    return (int(page_id), page_id) if page_id.isdigit() else (1 << 62, page_id)


def _encode_cursor(value: JSON) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


def _decode_cursor(cursor: str) -> JSON:
    """An opaque cursor back to its value; a cursor we never handed out is a 400, as on Cloud."""
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, ValueError):
        value = None
    if not isinstance(value, dict):
        raise web.HTTPBadRequest(text='{"statusCode": 400, "message": "Invalid cursor"}',
                                 content_type="application/json")
    return value


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"statusCode": status, "message": message}, status=status, headers=headers)


def _limit(request: web.Request, default: int, cap: int) -> int:
    try:
        return max(1, min(int(request.query.get("limit", default)), cap))
    except ValueError:
        return default


class SampleConfluence(PermissionState):
    """A Confluence site in memory: edit its state, read what was asked."""

    def __init__(
        self, *, email: str = "demo@example.com", api_token: str = "demo-token", pat: str | None = None
    ) -> None:
        self._cloud_auth = "Basic " + base64.b64encode(f"{email}:{api_token}".encode()).decode()
        self._dc_auth = f"Bearer {pat}" if pat else None
        self.spaces: dict[str, EmulatedSpace] = {}
        self.pages: dict[str, EmulatedPage] = {}
        self.requests: list[tuple[str, str, str]] = []  # (method, path, query string)
        self.bodies_served = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.cql_timezone: tzinfo = UTC  # the zone CQL dates are read in (real servers: the user's)
        self.base_url: str | None = None
        self.v2_next_in_body = True  # False: the next cursor only in the `Link` header
        # Cloud's v1 `GET /wiki/rest/api/content/{id}` answers 410 Gone (deprecated; always so through the
        # api.atlassian.com gateway that scoped API tokens use).
        self.v1_content_gone = False
        self.cloud_id = "a436116f-02ce-4520-8fbb-7301462a1674"
        self.comments: dict[str, EmulatedComment] = {}
        self.attachments: dict[str, EmulatedAttachment] = {}
        self.users: dict[str, EmulatedUser] = {}
        self.attachment_downloads = 0
        self._next_id = 65537
        self._runner: web.AppRunner | None = None
        self._init_permissions()

    # ---- lifecycle ----------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0 picks a free port); returns the base URL (no `/wiki`)."""

        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self._middleware(request, handler)

        app = web.Application(middlewares=[middleware])
        gateway = f"/ex/confluence/{self.cloud_id}/wiki"  # api.atlassian.com for scoped tokens and OAuth
        for prefix in ("/wiki", "", gateway):
            app.router.add_get(prefix + "/rest/api/space/{key}", self._v1_space)
            app.router.add_get(prefix + "/rest/api/content", self._v1_content_list)
            app.router.add_get(prefix + "/rest/api/content/search", self._v1_search)
            app.router.add_get(prefix + "/rest/api/content/{page_id}", self._v1_content)
            app.router.add_get(prefix + "/rest/api/content/{page_id}/restriction/byOperation/read",
                               self._v1_read_restrictions)
            app.router.add_get(prefix + "/rest/api/content/{page_id}/child/attachment/{attachment_id}/download",
                               self._download)
            app.router.add_get(prefix + "/rest/api/user", self._v1_user)
        app.router.add_get("/_edge/tenant_info", self._tenant_info)
        for prefix in ("/wiki", gateway):
            self.add_permission_routes(app, prefix)
            v2 = prefix + "/api/v2"
            app.router.add_get(v2 + "/spaces", self._v2_spaces)
            app.router.add_get(v2 + "/spaces/{space_id}/pages", self._v2_space_pages)
            app.router.add_get(v2 + "/spaces/{space_id}/blogposts", self._v2_space_blogposts)
            app.router.add_get(v2 + "/pages", self._v2_pages)
            app.router.add_get(v2 + "/blogposts", self._v2_pages)
            app.router.add_get(v2 + "/pages/{page_id}", self._v2_page_one)
            app.router.add_get(v2 + "/blogposts/{page_id}", self._v2_page_one)
            app.router.add_get(v2 + "/pages/{page_id}/ancestors", self._v2_ancestors)
            for kind in ("pages", "blogposts"):
                app.router.add_get(f"{v2}/{kind}/{{page_id}}/attachments", self._v2_attachments)
                app.router.add_get(f"{v2}/{kind}/{{page_id}}/footer-comments", self._v2_footer_comments)
                app.router.add_get(f"{v2}/{kind}/{{page_id}}/inline-comments", self._v2_inline_comments)
            app.router.add_get(v2 + "/attachments", self._v2_attachments)
            app.router.add_get(v2 + "/footer-comments", self._v2_footer_comments)
            app.router.add_get(v2 + "/inline-comments", self._v2_inline_comments)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.base_url = f"http://{host}:{bound[1]}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ---- state --------------------------------------------------------------------------------------

    def add_space(self, key: str, name: str) -> EmulatedSpace:
        space = EmulatedSpace(space_id=str(self._new_id()), key=key, name=name)
        self.spaces[key] = space
        return space

    def add_page(
        self,
        space_key: str,
        title: str,
        body: str,
        *,
        parent_title: str | None = None,
        labels: Iterable[str] = (),
        restricted: bool = False,
        page_id: str | None = None,
        modified_at: datetime | None = None,
    ) -> str:
        """Create a current page (version 1); returns its id."""
        if space_key not in self.spaces:
            self.add_space(space_key, space_key)
        parent_id = self.find(parent_title, space_key=space_key) if parent_title else None
        new_id = page_id or str(self._new_id())
        when = modified_at or datetime.now(UTC)
        self.pages[new_id] = EmulatedPage(
            new_id, space_key, title, body, parent_id, tuple(labels), restricted, 1, when, when
        )
        return new_id

    def edit_page(
        self, page_id: str, *, body: str | None = None, title: str | None = None,
        modified_at: datetime | None = None,
    ) -> int:
        """Change body and/or title; bumps the version and last-modified time. Returns the new version."""
        page = self.pages[page_id]
        page.body = page.body if body is None else body
        page.title = page.title if title is None else title
        page.version += 1
        page.modified = modified_at or datetime.now(UTC)
        return page.version

    def delete_page(self, page_id: str) -> None:
        del self.pages[page_id]
        for comment in [c for c in self.comments.values() if c.page_id == page_id]:
            del self.comments[comment.comment_id]
        for attachment in [a for a in self.attachments.values() if a.page_id == page_id]:
            del self.attachments[attachment.attachment_id]

    def add_blogpost(self, space_key: str, title: str, body: str, *, labels: Iterable[str] = ()) -> str:
        """Create a current blog post (version 1); returns its id."""
        new_id = self.add_page(space_key, title, body, labels=labels)
        self.pages[new_id].kind = "blogpost"
        return new_id

    def add_user(
        self, account_id: str, display_name: str, *, username: str = "", user_key: str = "", email: str = "",
    ) -> None:
        """A user (a member of the all-users group, as every licensed Cloud user is)."""
        self.users[account_id] = EmulatedUser(
            account_id, display_name, username or display_name.lower().replace(" ", "."),
            user_key or f"8a7f808a{len(self.users):08x}", email,
        )
        self.add_member(ALL_USERS, account_id)

    def add_comment(
        self, page_id: str, body: str, *, author_id: str = _OWNER["accountId"], inline: bool = False,
        resolved: bool = False,
    ) -> str:
        """A footer comment, or an inline one (open unless `resolved`); adding it leaves the page's version."""
        now = datetime.now(UTC)
        new_id = str(self._new_id())
        self.comments[new_id] = EmulatedComment(
            new_id, page_id, body, author_id, "inline" if inline else "footer",
            ("resolved" if resolved else "open") if inline else "", 1, now, now,
        )
        return new_id

    def edit_comment(self, comment_id: str, body: str) -> None:
        comment = self.comments[comment_id]
        comment.body, comment.version, comment.modified = body, comment.version + 1, datetime.now(UTC)

    def delete_comment(self, comment_id: str) -> None:
        del self.comments[comment_id]

    def add_attachment(self, page_id: str, title: str, data: bytes, *, media_type: str) -> str:
        """Attach a file (version 1); the page's version stays as it is, as on Cloud."""
        new_id = "att" + str(self._new_id())
        self.attachments[new_id] = EmulatedAttachment(new_id, page_id, title, media_type, data, 1,
                                                      datetime.now(UTC))
        return new_id

    def update_attachment(self, attachment_id: str, data: bytes) -> None:
        attachment = self.attachments[attachment_id]
        attachment.data, attachment.version = data, attachment.version + 1

    def delete_attachment(self, attachment_id: str) -> None:
        del self.attachments[attachment_id]

    def archive_page(self, page_id: str) -> None:
        self.pages[page_id].status = "archived"

    def move_page(self, page_id: str, to_space: str) -> None:
        if to_space not in self.spaces:
            self.add_space(to_space, to_space)
        page = self.pages[page_id]
        page.space_key, page.parent_id = to_space, None
        page.version += 1
        page.modified = datetime.now(UTC)

    def forbid_page(self, page_id: str) -> None:
        """Fetching this page answers 403 from now on (it still shows in listings)."""
        self.pages[page_id].forbidden = True

    def find(self, title: str, *, space_key: str | None = None) -> str:
        """The id of the page with this title."""
        for page in self.pages.values():
            if page.title == title and (space_key is None or page.space_key == space_key):
                return page.page_id
        raise KeyError(title)

    def reset_records(self) -> None:
        """Forget recorded requests and counters (state and faults stay)."""
        self.requests.clear()
        self.bodies_served = 0
        self.attachment_downloads = 0
        self.max_in_flight = self.in_flight

    def count(self, path_contains: str = "") -> int:
        """How many requests had `path_contains` in their path (or in "path?query", to pin one page's
        body fetch with `body_path`)."""
        return sum(1 for _, path, query in self.requests if path_contains in f"{path}?{query}")

    @staticmethod
    def body_path(page_id: str, *, cloud: bool = True) -> str:
        """What only the body fetch of this page has in its "path?query": v2 on Cloud, v1 on Data Center."""
        return f"/pages/{page_id}?" if cloud else f"/content/{page_id}?"

    # ---- plumbing -----------------------------------------------------------------------------------

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _site_path(self, request: web.Request) -> str:
        """The path without the gateway's `/ex/confluence/{cloudId}`: Cloud's links never carry it."""
        return request.path.removeprefix(f"/ex/confluence/{self.cloud_id}")

    def _is_cloud(self, request: web.Request) -> bool:
        return self._site_path(request).startswith("/wiki/")

    def _authorized(self, request: web.Request) -> bool:
        if request.path == "/_edge/tenant_info":
            return True  # public on a real site
        expected = self._cloud_auth if self._is_cloud(request) else self._dc_auth
        return expected is not None and request.headers.get("Authorization") == expected

    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append((request.method, request.path, request.query_string))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._respond(request, handler)
        finally:
            self.in_flight -= 1

    async def _respond(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Authenticate, then answer. The tests' emulator overrides this to inject faults."""
        if not self._authorized(request):
            return _error(401, "Unauthorized", {"WWW-Authenticate": 'Basic realm="Confluence"'})
        return await handler(request)

    def _base(self, request: web.Request) -> tuple[str, str]:
        """(`_links.base`, `_links.context`) for this request's flavour."""
        origin = f"{request.scheme}://{request.host}"
        return (origin + "/wiki", "/wiki") if self._is_cloud(request) else (origin, "")

    def _webui(self, page: EmulatedPage, *, cloud: bool) -> str:
        title = quote_plus(page.title)
        return f"/spaces/{page.space_key}/pages/{page.page_id}/{title}" if cloud else (
            f"/display/{page.space_key}/{title}"
        )

    def _sorted(self, pages: Iterable[EmulatedPage]) -> list[EmulatedPage]:
        return sorted(pages, key=lambda p: _id_key(p.page_id))

    def _listing_fails(self, offset: int) -> bool:
        """Whether a listing page starting at `offset` fails (never here; the tests' emulator can)."""
        return False

    # ---- REST v2 (Cloud) ----------------------------------------------------------------------------

    def _v2_page(self, page: EmulatedPage, *, body: bool) -> JSON:
        space = self.spaces[page.space_key]
        item: JSON = {
            "id": page.page_id, "status": page.status, "title": page.title, "spaceId": space.space_id,
            "parentId": page.parent_id, "parentType": "page" if page.parent_id else None,
            "position": 0, "authorId": _OWNER["accountId"], "ownerId": _OWNER["accountId"],
            "createdAt": _iso(page.created, cloud=True),
            "version": {"createdAt": _iso(page.modified, cloud=True), "message": "", "number": page.version,
                        "minorEdit": False, "authorId": _OWNER["accountId"]},
            "_links": {"webui": self._webui(page, cloud=True), "tinyui": f"/x/{page.page_id}"},
        }
        if body:
            item["body"] = {"storage": {"representation": "storage", "value": page.body}}
            self.bodies_served += 1
        return item

    def _v2_list(self, request: web.Request, pages: list[EmulatedPage], *, listing: bool) -> web.Response:
        """One cursor page of `pages` (keyset on id), with `_links.next` and a `Link` header."""
        limit = _limit(request, V2_DEFAULT_LIMIT, V2_MAX_LIMIT)
        cursor = request.query.get("cursor")
        after = str(_decode_cursor(cursor).get("after", "")) if cursor else None
        ordered = self._sorted(pages)
        offset = 0
        if after is not None:
            offset = sum(1 for p in ordered if _id_key(p.page_id) <= _id_key(after))
            ordered = [p for p in ordered if _id_key(p.page_id) > _id_key(after)]
        if listing and self._listing_fails(offset):
            return _error(500, "Injected listing failure")
        chunk = ordered[:limit]
        with_body = request.query.get("body-format") == "storage"
        base, _ = self._base(request)
        data: JSON = {"results": [self._v2_page(p, body=with_body) for p in chunk], "_links": {"base": base}}
        headers: dict[str, str] = {}
        if len(ordered) > limit:
            params = [(k, v) for k, v in request.query.items() if k != "cursor"]
            params.append(("cursor", _encode_cursor({"after": chunk[-1].page_id})))
            nxt = f"{self._site_path(request)}?{urlencode(params)}"  # the gateway drops its prefix here
            if self.v2_next_in_body:
                data["_links"]["next"] = nxt
            headers["Link"] = f'<{nxt}>; rel="next", <{base}>; rel="base"'
        return web.json_response(data, headers=headers)

    def _statuses(self, request: web.Request, default: tuple[str, ...]) -> set[str]:
        values = [s for v in request.query.getall("status", []) for s in v.split(",") if s]
        return set(values or default)

    async def _v2_spaces(self, request: web.Request) -> web.Response:
        keys = {k for v in request.query.getall("keys", []) for k in v.split(",") if k}
        ids = {k for v in request.query.getall("ids", []) for k in v.split(",") if k}
        found = [s for s in self.spaces.values() if (not keys or s.key in keys) and (not ids or s.space_id in ids)]
        base, _ = self._base(request)
        results = [
            {"id": s.space_id, "key": s.key, "name": s.name, "type": "global", "status": "current",
             "authorId": _OWNER["accountId"], "homepageId": None, "description": None, "icon": None,
             "_links": {"webui": f"/spaces/{s.key}"}}
            for s in found
        ]
        return web.json_response({"results": results, "_links": {"base": base}})

    async def _v2_space_pages(self, request: web.Request) -> web.Response:
        space = next((s for s in self.spaces.values() if s.space_id == request.match_info["space_id"]), None)
        if space is None:
            return _error(404, "Space not found")
        statuses = self._statuses(request, ("current",))
        pages = [p for p in self.pages.values()
                 if p.space_key == space.key and p.status in statuses and p.kind == "page"]
        return self._v2_list(request, pages, listing=True)

    async def _v2_pages(self, request: web.Request) -> web.Response:
        ids = {i for v in request.query.getall("id", []) for i in v.split(",") if i}
        space_ids = {i for v in request.query.getall("space-id", []) for i in v.split(",") if i}
        statuses = self._statuses(request, ("current", "archived"))
        kind = "blogpost" if self._site_path(request).endswith("/blogposts") else "page"
        pages = [
            p for p in self.pages.values()
            if p.status in statuses and (not ids or p.page_id in ids) and p.kind == kind
            and request.query.get("title", p.title) == p.title
            and (not space_ids or self.spaces[p.space_key].space_id in space_ids)
        ]
        return self._v2_list(request, pages, listing=False)

    # ---- REST v1 (Cloud under /wiki, Data Center) ---------------------------------------------------

    def _v1_page(self, request: web.Request, page: EmulatedPage, expand: set[str]) -> JSON:
        cloud = self._is_cloud(request)
        base, context = self._base(request)
        item: JSON = {
            "id": page.page_id, "type": page.kind, "status": page.status, "title": page.title,
            "_links": {"webui": self._webui(page, cloud=cloud), "tinyui": f"/x/{page.page_id}",
                       "self": f"{base}/rest/api/content/{page.page_id}"},
        }
        version = {"by": {"displayName": _OWNER["displayName"]}, "when": _iso(page.modified, cloud=cloud),
                   "number": page.version, "minorEdit": False, "message": ""}
        if "version" in expand:
            item["version"] = version
        if "history.lastUpdated" in expand or "history" in expand:
            item["history"] = {"latest": True, "createdDate": _iso(page.created, cloud=cloud),
                               "lastUpdated": version}
        if "space" in expand:
            space = self.spaces[page.space_key]
            item["space"] = {"id": int(space.space_id), "key": space.key, "name": space.name,
                             "type": "global", "status": "current"}
        if "ancestors" in expand:
            chain = self._ancestors(page)
            item["ancestors"] = [{"id": a.page_id, "type": "page", "status": a.status, "title": a.title}
                                 for a in chain]
            if any(e.startswith("ancestors.restrictions.read") for e in expand):
                for entry, ancestor in zip(item["ancestors"], chain, strict=True):
                    entry["restrictions"] = self._read_restrictions(ancestor)
        if "metadata.labels" in expand:
            labels = [{"prefix": "global", "name": n, "id": str(i + 1), "label": n}
                      for i, n in enumerate(page.labels)]
            item["metadata"] = {"labels": {"results": labels, "start": 0, "limit": 200, "size": len(labels)}}
        if any(e.startswith("restrictions.read") for e in expand):
            item["restrictions"] = self._read_restrictions(page)
        if "body.storage" in expand:
            item["body"] = {"storage": {"value": page.body, "representation": "storage"}}
            self.bodies_served += 1
        if request.match_info.get("page_id"):
            item["_links"].update({"base": base, "context": context})
        return item

    def _read_restrictions(self, page: EmulatedPage) -> JSON:
        """`restricted` pages name their owner; `restrict_page` sets any users and groups (no new version)."""
        return {"read": {"operation": "read", "restrictions": self.restriction_json(
            page.page_id, _OWNER if page.restricted else None)}}

    def _v1_list(self, request: web.Request, pages: list[EmulatedPage], *, listing: bool) -> web.Response:
        """One `start`/`limit` page (Cloud search also hands out a cursor) with `_links.next`."""
        expand = {e for e in request.query.get("expand", "").split(",") if e}
        cap = V1_MAX_LIMIT_WITH_BODY if "body.storage" in expand else V1_MAX_LIMIT
        limit = _limit(request, V1_DEFAULT_LIMIT, cap)
        cursor = request.query.get("cursor")
        try:
            start = int(_decode_cursor(cursor).get("start", 0) if cursor else request.query.get("start", 0))
        except ValueError:
            return _error(400, "start must be a number")
        if listing and self._listing_fails(start):
            return _error(500, "Injected listing failure")
        ordered = self._sorted(pages)
        chunk = ordered[start : start + limit]
        base, context = self._base(request)
        site_path = self._site_path(request)
        links: JSON = {"base": base, "context": context, "self": base + site_path.removeprefix(context)}
        if start + limit < len(ordered):
            params = [(k, v) for k, v in request.query.items() if k not in ("start", "cursor", "next")]
            if "cursor" in request.query or (context and site_path.endswith("/search")):
                params = [("next", "true"), ("cursor", _encode_cursor({"start": start + limit})), *params]
            params.append(("start", str(start + limit)))
            links["next"] = site_path.removeprefix(context) + "?" + urlencode(params)
        results = [self._v1_page(request, p, expand) for p in chunk]
        return web.json_response(
            {"results": results, "start": start, "limit": limit, "size": len(results), "_links": links}
        )

    async def _v1_space(self, request: web.Request) -> web.Response:
        space = self.spaces.get(request.match_info["key"])
        if space is None:
            return _error(404, f"No space with key : {request.match_info['key']}")
        base, context = self._base(request)
        webui = f"/spaces/{space.key}" if context else f"/display/{space.key}"
        return web.json_response({"id": int(space.space_id), "key": space.key, "name": space.name,
                                  "type": "global", "status": "current",
                                  "_links": {"webui": webui, "base": base, "context": context}})

    async def _v1_content_list(self, request: web.Request) -> web.Response:
        key = request.query.get("spaceKey")
        statuses = self._statuses(request, ("current",))
        wanted = request.query.get("type", "page")
        pages = [p for p in self.pages.values()
                 if (key is None or p.space_key == key) and p.status in statuses
                 and wanted in ("page", "blogpost") and p.kind == wanted
                 and request.query.get("title", p.title) == p.title]
        return self._v1_list(request, pages, listing=key is not None)

    async def _v1_content(self, request: web.Request) -> web.Response:
        if self.v1_content_gone and self._is_cloud(request):
            return _error(410, "This API is no longer available. Use the v2 API: GET /wiki/api/v2/pages/{id}")
        page = self.pages.get(request.match_info["page_id"])
        if page is None:
            return _error(404, f"No content found with id: ContentId{{id={request.match_info['page_id']}}}")
        if page.forbidden:
            return _error(403, "User not permitted to view content")
        expand = {e for e in request.query.get("expand", "").split(",") if e}
        if any(e.startswith("ancestors.restrictions") for e in expand) and any(
            a.breaks_expand for a in self._ancestors(page)
        ):
            return _error(404, "No content found with id: ContentId{id=draft}")  # CONFCLOUD-77618
        return web.json_response(self._v1_page(request, page, expand))

    async def _v1_search(self, request: web.Request) -> web.Response:
        try:
            query = self._parse_cql(request.query.get("cql", ""))
        except ValueError as err:
            return _error(400, f"Could not parse cql : {err}")
        pages = [
            p for p in self.pages.values()
            if p.status == "current"
            and (query.space is None or p.space_key == query.space)
            and (query.type is None or query.type == p.kind)
            and (query.modified_from is None or p.modified >= query.modified_from)
            and (query.ids is None or p.page_id in query.ids)
            and p.page_id not in self.hidden_from_search
        ]
        return self._v1_list(request, pages, listing=False)

    def _parse_cql(self, cql: str) -> _Query:
        """The CQL subset askdocs uses: space, type, lastmodified >=/>, id in (...), id = n, joined by AND."""
        text = re.split(r"\s+order\s+by\s+", cql.strip(), flags=re.IGNORECASE)[0]
        if not text:
            raise ValueError("empty query")
        query = _Query()
        for clause in re.split(r"\s+and\s+", text, flags=re.IGNORECASE):
            clause = clause.strip()
            if m := re.fullmatch(r'space\s*=\s*"?([^"\s]+)"?', clause, re.IGNORECASE):
                query.space = m.group(1)
            elif m := re.fullmatch(r'type\s*=\s*"?(\w+)"?', clause, re.IGNORECASE):
                query.type = m.group(1).lower()
            elif m := re.fullmatch(r'lastmodified\s*(>=|>)\s*"([^"]+)"', clause, re.IGNORECASE):
                query.modified_from = self._cql_date(m.group(2))
            elif m := re.fullmatch(r"id\s+in\s*\(([^)]*)\)", clause, re.IGNORECASE):
                query.ids = {i.strip().strip('"') for i in m.group(1).split(",") if i.strip()}
            elif m := re.fullmatch(r'id\s*=\s*"?(\d+)"?', clause, re.IGNORECASE):
                query.ids = {m.group(1)}
            else:
                raise ValueError(clause)
        return query

    def _cql_date(self, value: str) -> datetime:
        for fmt in ("%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M", "%Y-%m-%d", "%Y/%m/%d"):
            try:
                return datetime.strptime(value, fmt).replace(tzinfo=self.cql_timezone)
            except ValueError:
                continue
        raise ValueError(f"bad date {value!r}")

    # ---- content beyond page bodies: v2 pages/blog posts, ancestors, comments, attachments, users ---------

    def _ancestors(self, page: EmulatedPage) -> list[EmulatedPage]:
        """Root first, parent last."""
        chain: list[EmulatedPage] = []
        parent = self.pages.get(page.parent_id or "")
        while parent is not None and parent not in chain:
            chain.insert(0, parent)
            parent = self.pages.get(parent.parent_id or "")
        return chain

    def _v2_items(self, request: web.Request, items: list[tuple[str, Callable[[], JSON]]]) -> web.Response:
        """One cursor page of any v2 collection (keyset on id), with `_links.next` and a `Link` header."""
        limit = _limit(request, V2_DEFAULT_LIMIT, V2_MAX_LIMIT)
        cursor = request.query.get("cursor")
        after = str(_decode_cursor(cursor).get("after", "")) if cursor else None
        ordered = sorted(items, key=lambda item: _id_key(item[0].removeprefix("att")))
        if after is not None:
            ordered = [i for i in ordered if _id_key(i[0].removeprefix("att")) > _id_key(after.removeprefix("att"))]
        chunk = ordered[:limit]
        base, _ = self._base(request)
        data: JSON = {"results": [make() for _, make in chunk], "_links": {"base": base}}
        headers: dict[str, str] = {}
        if len(ordered) > limit:
            params = [(k, v) for k, v in request.query.items() if k != "cursor"]
            params.append(("cursor", _encode_cursor({"after": chunk[-1][0]})))
            nxt = f"{self._site_path(request)}?{urlencode(params)}"
            data["_links"]["next"] = nxt
            headers["Link"] = f'<{nxt}>; rel="next"'
        return web.json_response(data, headers=headers)

    async def _tenant_info(self, request: web.Request) -> web.Response:
        return web.json_response({"cloudId": self.cloud_id})

    def _visible(self, request: web.Request) -> EmulatedPage | None:
        """The page or blog post named in the path, if current and of the kind the path says."""
        page = self.pages.get(request.match_info["page_id"])
        kind = "blogpost" if "/blogposts/" in self._site_path(request) else "page"
        if page is None or page.kind != kind or page.status != "current":
            return None
        return page

    async def _v2_page_one(self, request: web.Request) -> web.Response:
        page = self._visible(request)
        if page is None:
            return _error(404, "Not Found")
        if page.forbidden:
            return _error(403, "Forbidden")
        item = self._v2_page(page, body=request.query.get("body-format") == "storage")
        if page.kind == "blogpost":
            for key in ("parentId", "parentType", "position", "ownerId"):
                item.pop(key, None)
        if request.query.get("include-labels") == "true":
            labels = [{"id": str(i + 1), "name": n, "prefix": "global"} for i, n in enumerate(page.labels)]
            item["labels"] = {"results": labels, "meta": {"hasMore": False, "cursor": ""}, "_links": {}}
        base, _ = self._base(request)
        item["_links"]["base"] = base
        return web.json_response(item)

    async def _v2_space_blogposts(self, request: web.Request) -> web.Response:
        space = next((s for s in self.spaces.values() if s.space_id == request.match_info["space_id"]), None)
        if space is None:
            return _error(404, "Space not found")
        statuses = self._statuses(request, ("current",))
        posts = [p for p in self.pages.values()
                 if p.space_key == space.key and p.status in statuses and p.kind == "blogpost"]
        with_body = request.query.get("body-format") == "storage"
        return self._v2_items(request, [(p.page_id, partial(self._v2_page, p, body=with_body)) for p in posts])

    async def _v2_ancestors(self, request: web.Request) -> web.Response:
        page = self._visible(request)
        if page is None:
            return _error(404, "Not Found")
        return web.json_response({"results": [{"id": a.page_id, "type": "page"} for a in self._ancestors(page)],
                                  "_links": {}})

    async def _v1_read_restrictions(self, request: web.Request) -> web.Response:
        page = self.pages.get(request.match_info["page_id"])
        if page is None or page.breaks_expand:
            return _error(404, "No content found")
        restrictions = self._read_restrictions(page)["read"]
        return web.json_response({**restrictions, "content": {"id": page.page_id, "type": page.kind}})

    def _container(self, request: web.Request) -> tuple[bool, EmulatedPage | None]:
        """(scoped to one page?, that page) for per-page and site-wide comment/attachment listings."""
        if "page_id" not in request.match_info:
            return False, None
        return True, self._visible(request)

    def _comment_json(self, comment: EmulatedComment, *, body: bool) -> JSON:
        page = self.pages[comment.page_id]
        item: JSON = {
            "id": comment.comment_id, "status": "current", "title": f"Re: {page.title}",
            ("blogPostId" if page.kind == "blogpost" else "pageId"): page.page_id,
            "version": {"createdAt": _iso(comment.modified, cloud=True), "message": "",
                        "number": comment.version, "minorEdit": False, "authorId": comment.author_id},
            "_links": {"webui": self._webui(page, cloud=True) + f"?focusedCommentId={comment.comment_id}"},
        }
        if comment.kind == "inline":
            item["resolutionStatus"] = comment.resolution
        if body:
            item["body"] = {"storage": {"representation": "storage", "value": comment.body}}
        return item

    def _comments(self, request: web.Request, kind: str) -> web.Response:
        scoped, page = self._container(request)
        if scoped and page is None:
            return _error(404, "Not Found")
        resolution = {v for v in request.query.getall("resolution-status", []) for v in v.split(",") if v}
        found = [
            c for c in self.comments.values()
            if c.kind == kind and (page is None or c.page_id == page.page_id)
            and (not resolution or c.resolution in resolution)
            and self.pages.get(c.page_id) is not None
        ]
        with_body = request.query.get("body-format") == "storage"
        return self._v2_items(
            request, [(c.comment_id, partial(self._comment_json, c, body=with_body)) for c in found]
        )

    async def _v2_footer_comments(self, request: web.Request) -> web.Response:
        return self._comments(request, "footer")

    async def _v2_inline_comments(self, request: web.Request) -> web.Response:
        return self._comments(request, "inline")

    def _attachment_json(self, attachment: EmulatedAttachment) -> JSON:
        page = self.pages[attachment.page_id]
        return {
            "id": attachment.attachment_id, "status": "current", "title": attachment.title,
            "createdAt": _iso(attachment.created, cloud=True),
            ("blogPostId" if page.kind == "blogpost" else "pageId"): page.page_id,
            "mediaType": attachment.media_type, "fileSize": len(attachment.data),
            "fileId": f"file-{attachment.attachment_id}",
            "webuiLink": f"/pages/viewpageattachments.action?pageId={page.page_id}&preview=/{page.page_id}/"
                         f"{attachment.attachment_id}/{quote_plus(attachment.title)}",
            "downloadLink": f"/download/attachments/{page.page_id}/{quote_plus(attachment.title)}"
                            f"?version={attachment.version}&api=v2",
            "version": {"createdAt": _iso(attachment.created, cloud=True), "number": attachment.version,
                        "minorEdit": False, "authorId": _OWNER["accountId"]},
            "_links": {},
        }

    async def _v2_attachments(self, request: web.Request) -> web.Response:
        scoped, page = self._container(request)
        if scoped and page is None:
            return _error(404, "Not Found")
        found = [a for a in self.attachments.values()
                 if (page is None or a.page_id == page.page_id) and self.pages.get(a.page_id) is not None]
        return self._v2_items(request, [(a.attachment_id, partial(self._attachment_json, a)) for a in found])

    async def _download(self, request: web.Request) -> web.Response:
        attachment = self.attachments.get(request.match_info["attachment_id"])
        if attachment is None or attachment.page_id != request.match_info["page_id"]:
            return _error(404, "Attachment not found")
        self.attachment_downloads += 1
        return web.Response(body=attachment.data, content_type=attachment.media_type)

    async def _v1_user(self, request: web.Request) -> web.Response:
        """Cloud asks by `accountId`, Data Center by `key` (userkey) or `username`."""
        query = request.query
        user = next((u for u in self.users.values()
                     if u.account_id == query.get("accountId") or u.user_key == query.get("key")
                     or u.username == query.get("username")), None)
        if user is None:
            return _error(404, "No user found")
        data: JSON = {"type": "known", "displayName": user.display_name, "publicName": user.display_name}
        if self._is_cloud(request):
            data["accountId"] = user.account_id
        else:
            data.update({"username": user.username, "userKey": user.user_key})
        return web.json_response(data)
