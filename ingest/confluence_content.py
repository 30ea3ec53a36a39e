"""ContentApi: what ConfluenceClient reads beyond page bodies (issue 14) — v2 page and blog-post bodies,
ancestors, comments, attachments and their bytes, users, included pages, per-ancestor read restrictions.

A mixin of ConfluenceClient (it uses the client's URL building, pagination and retrying GET), kept apart so the
client's core stays small. Site-wide listings (`/footer-comments`, `/inline-comments`, `/attachments`) are read
once per client — one sync run — and then serve every space: v2 has no per-space listing of either, and asking
each page would cost a request per page on every sync. Names of users and read restrictions of ancestors are
cached for the client's life too (many pages share both).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from ingest.errors import ConfluenceError, safe_url
from ingest.models import AttachmentRef, Comment, IncludedPage, Page, PageRef

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ingest.confluence import RetryPolicy
    from ingest.models import Space
    from ingest.ratelimit import RateLimitGate

logger = logging.getLogger(__name__)

JSON = dict[str, Any]
_V2_LIMIT = 250
# The query parameter of v1 `GET /rest/api/user` for each way storage format names a user.
USER_LOOKUP = {"ri:account-id": "accountId", "ri:userkey": "key", "ri:username": "username"}


def parse_when(value: object) -> datetime | None:
    """An ISO timestamp from a response; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def comments_fingerprint(items: Iterable[tuple[str, int]]) -> str:
    """One string that changes when a comment is added, edited or deleted: "id:version" of each, hashed."""
    text = ",".join(f"{cid}:{version}" for cid, version in sorted(items))
    return hashlib.sha256(text.encode()).hexdigest()[:32] if text else ""


def _restricted(data: JSON) -> bool:
    """Whether a `restriction/byOperation/read` answer names any user or group."""
    restrictions = data.get("restrictions", {})
    return any(restrictions.get(kind, {}).get("results") for kind in ("user", "group"))


class ContentApi:
    """ConfluenceClient's base: its methods run with the client's session, retries and auth, which the
    client defines (declared here for the type checker)."""

    is_cloud: bool
    _web: str
    _site: str
    _auth: str
    _retry: RetryPolicy
    _session: aiohttp.ClientSession | None
    _semaphore: asyncio.Semaphore
    _gate: RateLimitGate
    _timeout: aiohttp.ClientTimeout
    _space_ids: dict[str, str]

    def _url(self, path: str, params: dict[str, str | int]) -> URL:
        raise NotImplementedError

    async def _get_json(self, url: URL) -> JSON:
        raise NotImplementedError

    def _paginate(self, first: URL, *, v2: bool) -> AsyncIterator[JSON]:
        raise NotImplementedError

    def _page_ref(self, item: JSON, space_key: str) -> PageRef:
        raise NotImplementedError

    async def get_space(self, key: str) -> Space:
        raise NotImplementedError

    def _http_error(self, status: int, url: str, raw: bytes, retry_after: float | None) -> ConfluenceError:
        raise NotImplementedError

    def _scrub(self, text: str) -> str:
        raise NotImplementedError

    def _init_content_cache(self) -> None:
        self._user_names: dict[str, str | None] = {}
        self._restricted_ids: dict[str, bool] = {}
        self._comment_index: dict[str, str] | None = None
        self._attachment_index: dict[str, list[AttachmentRef]] | None = None
        self._space_keys: dict[str, str] = {}
        self._page_titles: dict[str, str] = {}
        self._index_lock = asyncio.Lock()

    # ---- bodies (Cloud REST v2) ----------------------------------------------------------------------

    async def fetch_page_v2(self, page_id: str, *, content_type: str | None) -> Page:
        """A page or blog post through v2, with labels, ancestors (titles) and read restrictions."""
        kinds = [content_type] if content_type else ["page", "blogpost"]
        data: JSON | None = None
        for kind in kinds:
            url = self._url(f"/api/v2/{kind}s/{quote(page_id, safe='')}",
                            {"body-format": "storage", "include-labels": "true"})
            try:
                data = await self._get_json(url)
                content_type = kind
                break
            except ConfluenceError as err:
                if err.status != 404 or kind == kinds[-1]:
                    raise
        assert data is not None and content_type is not None
        ancestor_ids: list[str] = []
        ancestor_titles: tuple[str, ...] = ()
        if content_type == "page" and data.get("parentId"):  # a top-level page has no ancestors to ask for
            found = await self._get_json(self._url(f"/api/v2/pages/{quote(page_id, safe='')}/ancestors", {}))
            ancestor_ids = [str(a["id"]) for a in found.get("results", []) if a.get("type", "page") == "page"]
            ancestor_titles = await self._titles(ancestor_ids)
        # Restrictions are v1 only; each ancestor is read on its own (the ancestors expand can 404 under a
        # draft or trashed ancestor, CONFCLOUD-77618) and remembered: siblings share their ancestors.
        restricted = await self.any_read_restricted([page_id, *ancestor_ids])
        links = data.get("_links", {})
        labels = data.get("labels", {}).get("results", []) if isinstance(data.get("labels"), dict) else []
        version = data.get("version", {})
        return Page(
            page_id=str(data["id"]),
            space_key=await self._space_key(str(data.get("spaceId", ""))),
            title=str(data.get("title", "")),
            version=int(version.get("number", 0)),
            url=str(links.get("base") or self._web) + str(links.get("webui", "")),
            body=str(data.get("body", {}).get("storage", {}).get("value", "")),
            ancestors=ancestor_titles,
            labels=tuple(str(lb.get("name", "")) for lb in labels),
            status=str(data.get("status", "current")),
            last_modified=parse_when(version.get("createdAt")),
            restricted=restricted,
            content_type=content_type,
        )

    async def _titles(self, page_ids: list[str]) -> tuple[str, ...]:
        """Ancestor titles for the breadcrumb; v2 ancestors carry ids only. Remembered: siblings share them."""
        unknown = [p for p in page_ids if p not in self._page_titles]
        if unknown:
            first = self._url("/api/v2/pages", {"id": ",".join(unknown), "limit": _V2_LIMIT})
            async for item in self._paginate(first, v2=True):
                self._page_titles[str(item["id"])] = str(item.get("title", ""))
        return tuple(self._page_titles[p] for p in page_ids if self._page_titles.get(p))

    async def _space_key(self, space_id: str) -> str:
        for key, known_id in self._space_ids.items():
            if known_id == space_id:
                return key
        if space_id not in self._space_keys:
            data = await self._get_json(self._url("/api/v2/spaces", {"ids": space_id}))
            found = [s for s in data.get("results", []) if str(s.get("id")) == space_id]
            self._space_keys[space_id] = str(found[0]["key"]) if found else ""
        return self._space_keys[space_id]

    async def list_blogposts(self, space_key: str) -> list[PageRef]:
        """Every current blog post of the space with its version number, without bodies (Cloud v2; Data
        Center v1)."""
        if self.is_cloud:
            space_id = self._space_ids.get(space_key) or (await self.get_space(space_key)).space_id
            first = self._url(f"/api/v2/spaces/{space_id}/blogposts", {"status": "current", "limit": _V2_LIMIT})
        else:
            first = self._url("/rest/api/content", {"spaceKey": space_key, "type": "blogpost",
                                                    "status": "current", "expand": "version", "limit": 100})
        refs: dict[str, PageRef] = {}
        async for item in self._paginate(first, v2=self.is_cloud):
            ref = self._page_ref(item, space_key)
            refs[ref.page_id] = PageRef(ref.page_id, ref.space_key, ref.title, ref.version, ref.status, ref.url,
                                        content_type="blogpost")
        return [r for r in refs.values() if r.status == "current"]

    # ---- read restrictions (v1: v2 has none) ----------------------------------------------------------

    async def any_read_restricted(self, content_ids: list[str]) -> bool:
        """Whether any of these pages has read restrictions. A 404 (a draft or trashed ancestor) counts as
        none: it must never make a page look deleted."""
        for content_id in content_ids:
            if content_id not in self._restricted_ids:
                url = self._url(f"/rest/api/content/{quote(content_id, safe='')}/restriction/byOperation/read",
                                {"expand": "restrictions.user,restrictions.group"})
                try:
                    self._restricted_ids[content_id] = _restricted(await self._get_json(url))
                except ConfluenceError as err:
                    if err.status != 404:
                        raise
                    logger.info("read restrictions of %s not found (draft or trashed ancestor?)", content_id)
                    self._restricted_ids[content_id] = False
            if self._restricted_ids[content_id]:
                return True
        return False

    # ---- comments ------------------------------------------------------------------------------------

    async def comment_fingerprints(self) -> dict[str, str] | None:
        """Fingerprint of each page's (and blog post's) indexable comments — footer comments and resolved
        inline comments — from the site-wide v2 listings without bodies. None on Data Center (no v2): there a
        page's comments are read when the page itself changes."""
        if not self.is_cloud:
            return None
        async with self._index_lock:
            if self._comment_index is None:
                versions: dict[str, list[tuple[str, int]]] = {}
                for kind in ("footer", "inline"):
                    first = self._url(f"/api/v2/{kind}-comments", {"limit": _V2_LIMIT})
                    async for item in self._paginate(first, v2=True):
                        if kind == "inline" and item.get("resolutionStatus") != "resolved":
                            continue
                        container = str(item.get("pageId") or item.get("blogPostId") or "")
                        if container:
                            number = int(item.get("version", {}).get("number", 0))
                            versions.setdefault(container, []).append((str(item["id"]), number))
                self._comment_index = {page: comments_fingerprint(items) for page, items in versions.items()}
            return self._comment_index

    async def fetch_comments(self, page_id: str, *, content_type: str = "page") -> list[Comment]:
        """The page's footer comments and resolved inline comments with bodies, oldest first."""
        comments: list[Comment] = []
        if self.is_cloud:
            base = f"/api/v2/{content_type}s/{quote(page_id, safe='')}"
            wanted = [("footer", {}), ("inline", {"resolution-status": "resolved"})]
            for kind, extra in wanted:
                first = self._url(f"{base}/{kind}-comments", {"body-format": "storage", "limit": _V2_LIMIT, **extra})
                async for item in self._paginate(first, v2=True):
                    if kind == "inline" and item.get("resolutionStatus", "resolved") != "resolved":
                        continue
                    version = item.get("version", {})
                    comments.append(Comment(
                        comment_id=str(item["id"]), page_id=page_id, version=int(version.get("number", 0)),
                        author_id=str(version.get("authorId", "")), created=parse_when(version.get("createdAt")),
                        body=str(item.get("body", {}).get("storage", {}).get("value", "")),
                        inline=kind == "inline",
                    ))
        else:
            first = self._url(f"/rest/api/content/{quote(page_id, safe='')}/child/comment",
                              {"expand": "body.storage,version,extensions.resolution", "depth": "all",
                               "limit": 100})
            async for item in self._paginate(first, v2=False):
                location = item.get("extensions", {}).get("location", "footer")
                resolution = item.get("extensions", {}).get("resolution", {}).get("status", "")
                if location == "inline" and resolution != "resolved":
                    continue
                version = item.get("version", {})
                by = version.get("by", {})
                comments.append(Comment(
                    comment_id=str(item["id"]), page_id=page_id, version=int(version.get("number", 0)),
                    author_id=str(by.get("userKey") or ""), author_name=str(by.get("displayName") or ""),
                    created=parse_when(version.get("when")),
                    body=str(item.get("body", {}).get("storage", {}).get("value", "")),
                    inline=location == "inline",
                ))
        return sorted(comments, key=lambda c: (c.created is None, c.created or datetime.min, c.comment_id))

    # ---- attachments ---------------------------------------------------------------------------------

    async def list_attachments(self) -> dict[str, list[AttachmentRef]] | None:
        """Every current attachment on the site by the page (or blog post) it hangs on, without bytes.
        None on Data Center (no v2 listing): attachments are a Cloud feature of askdocs for now."""
        if not self.is_cloud:
            return None
        async with self._index_lock:
            if self._attachment_index is None:
                index: dict[str, list[AttachmentRef]] = {}
                first = self._url("/api/v2/attachments", {"status": "current", "limit": _V2_LIMIT})
                async for item in self._paginate(first, v2=True):
                    container = str(item.get("pageId") or item.get("blogPostId") or "")
                    if not container:
                        continue
                    attachment_id = str(item["id"])
                    index.setdefault(container, []).append(AttachmentRef(
                        attachment_id=attachment_id, page_id=container, title=str(item.get("title", "")),
                        media_type=str(item.get("mediaType", "")), file_size=int(item.get("fileSize") or 0),
                        version=int(item.get("version", {}).get("number", 0)),
                        url=self._web + str(item.get("webuiLink") or item.get("downloadLink") or ""),
                        # v1's download path works through the gateway too (the v2 downloadLink is a site path).
                        download_path=f"/rest/api/content/{quote(container, safe='')}/child/attachment/"
                                      f"{quote(attachment_id, safe='')}/download",
                    ))
                self._attachment_index = index
            return self._attachment_index

    async def download_attachment(self, ref: AttachmentRef, *, max_bytes: int) -> bytes:
        """The file's bytes; ValueError once more than `max_bytes` arrive (the listing's size may be stale)."""
        url = URL(self._site + ref.download_path, encoded=True)
        last: ConfluenceError | None = None
        for attempt in range(self._retry.attempts):
            try:
                return await self._get_bytes(url, max_bytes=max_bytes)
            except ConfluenceError as err:
                if not err.retryable:
                    raise
                last = err
                # A rate-limit window is waited out by the client's shared gate (issue 16), before any request.
                delay = 0.0 if err.retry_after is not None else self._retry.base_delay_s * 2**attempt
                await asyncio.sleep(min(delay, self._retry.max_delay_s))
        assert last is not None
        raise last

    async def _get_bytes(self, url: URL, *, max_bytes: int) -> bytes:
        shown = safe_url(str(url))
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._semaphore, self._gate.turn():
            try:
                async with self._session.get(url, headers={"Authorization": self._auth}, timeout=self._timeout,
                                             allow_redirects=True) as resp:
                    window = self._gate.observe(resp.status, resp.headers, shown)
                    if resp.status >= 400:
                        raise self._http_error(resp.status, shown, await resp.read(), window)
                    data = bytearray()
                    async for block in resp.content.iter_chunked(1 << 16):
                        data.extend(block)
                        if len(data) > max_bytes:
                            raise ValueError(f"larger than the {max_bytes / (1 << 20):.3g} MB limit")
                    return bytes(data)
            except (ConfluenceError, ValueError):
                raise
            except (aiohttp.ClientError, TimeoutError, OSError) as err:
                detail = "timed out" if isinstance(err, TimeoutError) else f"{type(err).__name__}: {err}"
                raise ConfluenceError(None, shown, self._scrub(f"download failed, {detail}")) from None

    # ---- users and included pages --------------------------------------------------------------------

    async def display_names(self, users: Iterable[tuple[str, str]]) -> dict[str, str]:
        """Display names for (`ri:account-id` | `ri:userkey` | `ri:username`, value) pairs, by value;
        users the API doesn't know are left out (the converter then keeps its fallback)."""
        names: dict[str, str] = {}
        for attribute, value in sorted(set(users)):
            param = USER_LOOKUP.get(attribute)
            if param is None or not value:
                continue
            if value not in self._user_names:
                try:
                    data = await self._get_json(self._url("/rest/api/user", {param: value}))
                    name = data.get("displayName") or data.get("publicName")
                    self._user_names[value] = str(name) if name else None
                except ConfluenceError as err:
                    if err.status not in (403, 404):
                        raise
                    self._user_names[value] = None
            found = self._user_names[value]
            if found:
                names[value] = found
        return names

    async def fetch_included(self, space_key: str, title: str) -> IncludedPage | None:
        """The page an include / excerpt-include macro names, with its body; None when it can't be read."""
        try:
            if self.is_cloud:
                space_id = self._space_ids.get(space_key) or (await self.get_space(space_key)).space_id
                first = self._url("/api/v2/pages", {"space-id": space_id, "title": title,
                                                    "body-format": "storage", "status": "current"})
                items = [item async for item in self._paginate(first, v2=True)]
            else:
                first = self._url("/rest/api/content", {"spaceKey": space_key, "title": title,
                                                        "expand": "body.storage", "type": "page"})
                items = [item async for item in self._paginate(first, v2=False)]
        except ConfluenceError as err:
            if err.status not in (403, 404):
                raise
            return None
        for item in items:
            if item.get("title") == title:
                body = str(item.get("body", {}).get("storage", {}).get("value", ""))
                return IncludedPage(page_id=str(item["id"]), space_key=space_key, title=title, body=body)
        return None
