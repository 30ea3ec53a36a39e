"""ConfluenceClient: space listing (ids + versions, no bodies), body fetch, CQL, auth and retries.

Cloud (email + API token): basic auth under `/wiki`; REST v2 for spaces, listings and bodies (cursor in
`_links.next` or the `Link` header, `limit` <= 250); v1 only for what v2 lacks (CQL, read restrictions, users):
v1 `GET /content/{id}` is deprecated and answers 410 Gone through the api.atlassian.com gateway that scoped
API tokens must use. The base URL may be that gateway (`https://api.atlassian.com/ex/confluence/{cloudId}`),
used as given: the server's next links omit the prefix, so they are joined to the configured base path.
Data Center (personal access token): Bearer auth under `/rest/api`, v1 only, `start`/`limit` pages. Either way
`_links.next` is followed, never computed (a loader that stops at the first 100 results is a known bug elsewhere).
Comments, attachments, blog posts and users: ingest/confluence_content.py (a mixin of this class).

Over 400 lines on purpose: Cloud and Data Center, v1 and v2, share one retry loop and one pagination walker;
splitting them apart would duplicate both.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential_jitter
from yarl import URL

from ingest.confluence_content import parse_when
from ingest.errors import ConfluenceAuthError, ConfluenceError, ListingIncomplete, PageForbidden, safe_url
from ingest.models import Page, PageRef, Space
from ingest.permissions import PermissionApi
from ingest.ratelimit import RateLimitGate

logger = logging.getLogger(__name__)

JSON = dict[str, Any]

# Everything fetch_page needs in one v1 request (Data Center). Read restrictions of the page and its ancestors: a page
# under a restricted parent is as hidden as the parent, though its own restrictions are empty.
PAGE_EXPAND = (
    "body.storage,version,ancestors,metadata.labels,space,history.lastUpdated,"
    "restrictions.read.restrictions.user,restrictions.read.restrictions.group,"
    "ancestors.restrictions.read.restrictions.user,ancestors.restrictions.read.restrictions.group"
)
# Without the ancestors' restrictions: that expand 404s when an ancestor is a draft or trashed (CONFCLOUD-77618);
# then each ancestor's restrictions are read on their own.
PAGE_EXPAND_NO_ANCESTOR_RESTRICTIONS = PAGE_EXPAND.rsplit(",ancestors.restrictions", 2)[0]
GATEWAY_URL = "https://api.atlassian.com"  # scoped API tokens and OAuth reach Cloud only through it
V2_MAX_LIMIT = 250  # Confluence Cloud REST v2: `limit` accepts 1..250
V1_MAX_LIMIT = 100  # v1 caps result pages at 100 (less when bodies are expanded)
_NUMERIC_ID = re.compile(r"^[0-9]+$")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a request; tests pass tiny delays instead of patching sleeps."""

    attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_retry_after_s: float = 120.0  # the longest single wait; tests shrink it
    # A window longer than this (Retry-After: 9223372036854775807 has been seen in the wild) means the account
    # is blocked: a clear error at once rather than ten-minute sleeps (issue 16).
    blocked_after_s: float = 300.0
    near_limit_interval_s: float = 0.25  # spacing between requests while X-RateLimit-NearLimit: true


def _read_restricted(content: JSON) -> bool:
    """Whether a content object's expanded read restrictions name any user or group."""
    restrictions = content.get("restrictions", {}).get("read", {}).get("restrictions", {})
    return any(restrictions.get(kind, {}).get("results") for kind in ("user", "group"))


def cql_time(moment: datetime) -> str:
    """`yyyy-MM-dd HH:mm` in UTC, the form CQL's `lastmodified` accepts (naive datetimes are taken as UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M")


def _cql_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class ConfluenceClient(PermissionApi):
    """Async Confluence REST client for one site, Cloud (email + API token) or Data Center (PAT).

    Credentials arrive as plain str (the caller unwraps SecretStr) and only ever go into the auth header.
    """

    def __init__(
        self,
        base_url: str,
        *,
        email: str | None = None,
        api_token: str | None = None,
        pat: str | None = None,
        retry: RetryPolicy = RetryPolicy(),  # frozen, so sharing the default is safe
        max_concurrency: int = 4,
        page_size: int = V2_MAX_LIMIT,  # fewest listing requests: a no-change sync of 1,168 pages makes 6
        timeout_s: float = 30,
        session: aiohttp.ClientSession | None = None,
        cloud_id: str | None = None,
        gateway_url: str = GATEWAY_URL,
    ) -> None:
        if pat and (email or api_token):
            raise ValueError("give either email + api_token (Cloud) or pat (Data Center), not both")
        if not pat and not (email and api_token):
            raise ValueError("Confluence credentials missing: email + api_token (Cloud) or pat (Data Center)")
        if max_concurrency < 1 or page_size < 1:
            raise ValueError("max_concurrency and page_size must be at least 1")
        root = base_url.rstrip("/")
        self.is_cloud = not pat
        # Where readers open pages when a response names no `_links.base` (the site, never the gateway).
        self._web = root if root.endswith("/wiki") or pat else root + "/wiki"
        if cloud_id and self.is_cloud:
            root = f"{gateway_url.rstrip('/')}/ex/confluence/{cloud_id}"
        if self.is_cloud:
            self._site = root if root.endswith("/wiki") else root + "/wiki"
            token = base64.b64encode(f"{email}:{api_token}".encode()).decode("ascii")
            self._auth = f"Basic {token}"
            self._secrets = tuple(s for s in (api_token, token) if s)
        else:
            self._site = root
            self._auth = f"Bearer {pat}"
            self._secrets = (pat,) if pat else ()
        self._origin = URL(self._site).origin()
        self._retry = retry
        self._page_size = page_size
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._gate = RateLimitGate(  # one per client: every worker waits out a window together (issue 16)
            max_wait_s=retry.max_retry_after_s, blocked_after_s=retry.blocked_after_s,
            near_limit_interval_s=retry.near_limit_interval_s,
        )
        self._session = session
        self._owns_session = session is None
        self._space_ids: dict[str, str] = {}
        self._init_content_cache()

    def __repr__(self) -> str:
        return f"ConfluenceClient({self._site!r}, cloud={self.is_cloud})"

    async def __aenter__(self) -> ConfluenceClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session if this client opened it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # ---- public API -------------------------------------------------------------------------------

    async def get_space(self, key: str) -> Space:
        """The space with this key; ConfluenceError(404) when there is none (or it is not visible)."""
        if self.is_cloud:
            url = self._url("/api/v2/spaces", {"keys": key})
            data = await self._get_json(url)
            found = [s for s in data.get("results", []) if s.get("key") == key]
            if not found:
                raise ConfluenceError(404, str(url), f"space {key} not found or not visible")
            raw = found[0]
            base = str(data.get("_links", {}).get("base") or self._web)
        else:
            url = self._url(f"/rest/api/space/{quote(key, safe='')}", {})
            raw = await self._get_json(url)
            base = str(raw.get("_links", {}).get("base") or self._web)
        space = Space(
            space_id=str(raw["id"]),
            key=str(raw["key"]),
            name=str(raw.get("name", key)),
            url=base + str(raw.get("_links", {}).get("webui", "")),
        )
        self._space_ids[key] = space.space_id
        return space

    async def list_pages(self, space_key: str) -> list[PageRef]:
        """Every current page of the space with its version number, without bodies.

        Raises ListingIncomplete when any request fails after retries: a partial listing must never
        look like pages were deleted.
        """
        refs: dict[str, PageRef] = {}  # by id: a page seen twice across pages counts once
        try:
            if self.is_cloud:
                space_id = self._space_ids.get(space_key) or (await self.get_space(space_key)).space_id
                first = self._url(
                    f"/api/v2/spaces/{space_id}/pages",
                    {"status": "current", "limit": min(self._page_size, V2_MAX_LIMIT)},
                )
            else:
                first = self._url(
                    "/rest/api/content",
                    {
                        "spaceKey": space_key,
                        "type": "page",
                        "status": "current",
                        "expand": "version",
                        "limit": min(self._page_size, V1_MAX_LIMIT),
                        "start": 0,
                    },
                )
            async for item in self._paginate(first, v2=self.is_cloud):
                ref = self._page_ref(item, space_key)
                if ref.status == "current":
                    refs[ref.page_id] = ref
        except (ConfluenceError, KeyError, TypeError, ValueError) as err:  # incl. a malformed item
            raise ListingIncomplete(space_key, err, pages_listed=len(refs)) from err
        logger.info("space %s: %d current pages listed", space_key, len(refs))
        return list(refs.values())

    async def fetch_page(self, page_id: str, *, content_type: str | None = None) -> Page:
        """One page (or blog post) with its storage-format body, ancestors, labels and read restrictions.

        Cloud: REST v2 (`content_type` None tries a page, then a blog post). Data Center: one v1 request.
        """
        try:
            if self.is_cloud:
                return await self.fetch_page_v2(page_id, content_type=content_type)
            return await self._fetch_page_v1(page_id)
        except ConfluenceError as err:
            if err.status == 403 and not isinstance(err, PageForbidden):
                raise PageForbidden(403, err.url, f"page {page_id} is not readable by this account") from err
            raise

    async def _fetch_page_v1(self, page_id: str) -> Page:
        url = self._url(f"/rest/api/content/{quote(page_id, safe='')}", {"expand": PAGE_EXPAND})
        try:
            data = await self._get_json(url)
            ancestors_restricted = any(_read_restricted(a) for a in data.get("ancestors", []))
        except ConfluenceError as err:
            if err.status != 404:
                raise
            # The expand 404s under a draft or trashed ancestor (CONFCLOUD-77618): a 404 here must not
            # delete the page. Ask without it, then read each ancestor's restrictions on its own.
            url = self._url(f"/rest/api/content/{quote(page_id, safe='')}",
                            {"expand": PAGE_EXPAND_NO_ANCESTOR_RESTRICTIONS})
            data = await self._get_json(url)  # a 404 now: the page itself is gone
            ancestors_restricted = await self.any_read_restricted([str(a["id"]) for a in data.get("ancestors", [])])
        links = data.get("_links", {})
        labels = data.get("metadata", {}).get("labels", {}).get("results", [])
        restricted = _read_restricted(data) or ancestors_restricted
        version = data.get("version", {})
        when = version.get("when") or data.get("history", {}).get("lastUpdated", {}).get("when")
        return Page(
            page_id=str(data["id"]),
            space_key=str(data.get("space", {}).get("key", "")),
            title=str(data.get("title", "")),
            version=int(version.get("number", 0)),
            url=str(links.get("base") or self._web) + str(links.get("webui", "")),
            body=str(data.get("body", {}).get("storage", {}).get("value", "")),
            ancestors=tuple(str(a.get("title", "")) for a in data.get("ancestors", [])),
            labels=tuple(str(lb.get("name", "")) for lb in labels),
            status=str(data.get("status", "current")),
            last_modified=parse_when(when),
            restricted=restricted,
            content_type=str(data.get("type", "page")),
        )

    async def current_versions(self, page_ids: list[str]) -> dict[str, int | None]:
        """Current version number of each page; None for pages that no longer exist (or are not current).

        Used at answer time to flag stale citations, so it asks in batches rather than once per page.
        """
        result: dict[str, int | None] = dict.fromkeys(page_ids)
        # Ids go into a URL or a CQL `in (...)`: only numeric ids are asked, others stay None.
        wanted = sorted({p for p in page_ids if _NUMERIC_ID.match(p)}, key=int)
        if self.is_cloud:
            firsts = [
                self._url(
                    "/api/v2/pages",
                    {"id": ",".join(batch), "status": "current", "limit": V2_MAX_LIMIT},
                )
                for batch in _chunks(wanted, V2_MAX_LIMIT)
            ]
        else:
            firsts = [
                self._url(
                    "/rest/api/content/search",
                    {"cql": f"id in ({','.join(batch)})", "expand": "version", "limit": V1_MAX_LIMIT},
                )
                for batch in _chunks(wanted, V1_MAX_LIMIT)
            ]

        async def collect(first: URL) -> list[JSON]:
            return [item async for item in self._paginate(first, v2=self.is_cloud)]

        for items in await asyncio.gather(*(collect(f) for f in firsts)):
            for item in items:
                page_id = str(item.get("id"))
                if page_id in result and item.get("status", "current") == "current":
                    result[page_id] = int(item.get("version", {}).get("number", 0)) or None
        if self.is_cloud:  # v2 lists blog posts apart from pages: ask for the ids no page answered
            rest = [p for p in wanted if result[p] is None]
            posts = [
                self._url("/api/v2/blogposts", {"id": ",".join(batch), "status": "current", "limit": V2_MAX_LIMIT})
                for batch in _chunks(rest, V2_MAX_LIMIT)
            ]
            for items in await asyncio.gather(*(collect(f) for f in posts)):
                for item in items:
                    if str(item.get("id")) in result and item.get("status", "current") == "current":
                        result[str(item["id"])] = int(item.get("version", {}).get("number", 0)) or None
        return result

    async def changed_since(
        self, space_key: str, since: datetime, *, overlap: timedelta = timedelta(hours=1)
    ) -> list[PageRef]:
        """Pages of the space modified at or after `since` (minus `overlap`), by v1 CQL.

        CQL reads `lastmodified` in the server's/user's time zone while we speak UTC: the window is widened
        by `overlap` rather than trusted to the minute (GUIDE, Confluence REST).
        """
        cql = (
            f"space = {_cql_quote(space_key)} and type = page and "
            f"lastmodified >= {_cql_quote(cql_time(since - overlap))}"
        )
        first = self._url(
            "/rest/api/content/search",
            {"cql": cql, "expand": "version,space", "limit": min(self._page_size, V1_MAX_LIMIT)},
        )
        refs: dict[str, PageRef] = {}
        async for item in self._paginate(first, v2=False):
            ref = self._page_ref(item, space_key)
            refs[ref.page_id] = ref
        return list(refs.values())

    # ---- plumbing ---------------------------------------------------------------------------------

    def _url(self, path: str, params: dict[str, str | int]) -> URL:
        query = urlencode(params)
        return URL(self._site + path + (f"?{query}" if query else ""), encoded=True)

    def _page_ref(self, item: JSON, space_key: str) -> PageRef:
        space = item.get("space")
        return PageRef(
            page_id=str(item["id"]),
            space_key=str(space.get("key", space_key)) if isinstance(space, dict) else space_key,
            title=str(item.get("title", "")),
            version=int(item.get("version", {}).get("number", 0)),
            status=str(item.get("status", "current")),
            url=self._page_url(item),
        )

    def _page_url(self, item: JSON) -> str:
        """The page's web address from a listing item (for failure reports); Data Center's fallback works
        for any page id."""
        webui = item.get("_links", {}).get("webui") if isinstance(item.get("_links"), dict) else None
        if webui:
            return self._web + str(webui)
        return f"{self._web}/pages/viewpage.action?pageId={item['id']}"

    def _next_url(self, data: JSON, headers: Any, *, v2: bool) -> URL | None:
        """The next page's URL from what the server gave; v2 links include `/wiki`, v1 links don't (Cloud)."""
        links = data.get("_links", {})
        nxt = links.get("next") if isinstance(links, dict) else None
        if isinstance(nxt, str) and nxt:
            link = URL(nxt, encoded=True)
            if link.is_absolute():  # never send our credentials to another host
                return self._join_site_path(link.raw_path_qs)
            if v2:
                return self._join_site_path(nxt)
            # Relative to `_links.base`; joined to our own root, as `base` may name a proxy's public host.
            return URL(self._site + nxt, encoded=True)
        header_next = headers.get("next") if headers else None  # parsed `Link` header (v2)
        if header_next and "url" in header_next:
            return self._join_site_path(URL(str(header_next["url"]), encoded=True).raw_path_qs)
        return None

    def _join_site_path(self, path_qs: str) -> URL:
        """A server path (`/wiki/api/v2/…`) under our configured base: through the api.atlassian.com gateway
        the server's links lack its `/ex/confluence/{cloudId}` prefix (issue 14), which must be kept."""
        root = URL(self._site, encoded=True)
        prefix = root.raw_path.removesuffix("/wiki") if self.is_cloud else root.raw_path.rstrip("/")
        if prefix and not path_qs.startswith(prefix + "/"):
            path_qs = prefix + path_qs
        return self._origin.join(URL(path_qs, encoded=True))

    async def _paginate(self, first: URL, *, v2: bool) -> AsyncIterator[JSON]:
        """Yield `results` items page after page, following `_links.next` (or `Link`) until there is none."""
        url: URL | None = first
        seen: set[str] = set()
        while url is not None:
            if str(url) in seen:
                raise ConfluenceError(None, str(url), "pagination loops: the same next link came back")
            seen.add(str(url))
            data, links = await self._get_json_with_links(url)
            for item in data.get("results", []):
                yield item
            url = self._next_url(data, links, v2=v2)

    async def _get_json(self, url: URL) -> JSON:
        data, _ = await self._get_json_with_links(url)
        return data

    async def _get_json_with_links(self, url: URL) -> tuple[JSON, Any]:
        """GET with retries: Retry-After honoured (clamped), other transient failures back off with jitter."""
        policy = self._retry
        backoff = wait_exponential_jitter(
            initial=policy.base_delay_s, max=policy.max_delay_s, jitter=policy.base_delay_s
        )

        def wait(state: RetryCallState) -> float:
            err = state.outcome.exception() if state.outcome else None
            if isinstance(err, ConfluenceError) and err.retry_after is not None:
                return 0.0  # the shared gate holds this request, and every other, until the window ends
            return float(backoff(state))

        def log_retry(state: RetryCallState) -> None:
            err = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            logger.warning(
                "Confluence request failed (%s); attempt %d/%d, retrying in %.2fs",
                err, state.attempt_number, policy.attempts, delay,
            )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.attempts),
            wait=wait,
            retry=retry_if_exception(lambda e: isinstance(e, ConfluenceError) and e.retryable),
            before_sleep=log_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._get_once(url)
        raise AssertionError("unreachable: tenacity re-raises the last failure")  # pragma: no cover

    async def _get_once(self, url: URL) -> tuple[JSON, Any]:
        """One GET under the concurrency bound; every failure becomes a ConfluenceError."""
        shown = safe_url(str(url))
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"Authorization": self._auth, "Accept": "application/json"}
        async with self._semaphore, self._gate.turn():
            try:
                async with self._session.get(
                    url, headers=headers, timeout=self._timeout, allow_redirects=True
                ) as resp:
                    raw = await resp.read()
                    window = self._gate.observe(resp.status, resp.headers, shown)
                    if resp.status >= 400:
                        raise self._http_error(resp.status, shown, raw, window)
                    links = resp.links
            except ConfluenceError:
                raise
            except aiohttp.InvalidURL as err:
                raise ConfluenceError(None, shown, f"invalid URL: {err}") from None
            except (aiohttp.ClientError, TimeoutError, OSError) as err:
                detail = "timed out" if isinstance(err, TimeoutError) else f"{type(err).__name__}: {err}"
                raise ConfluenceError(None, shown, self._scrub(f"request failed, {detail}")) from None
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ConfluenceError(
                None, shown, f"HTTP {resp.status} body was not valid JSON ({len(raw)} bytes)"
            ) from None
        if isinstance(data, list):  # a few v1 answers are bare arrays (`/user/email/bulk`)
            data = {"results": data}
        if not isinstance(data, dict):
            raise ConfluenceError(None, shown, f"HTTP {resp.status} body was JSON but not an object")
        return data, links

    def _http_error(self, status: int, url: str, raw: bytes, retry_after: float | None) -> ConfluenceError:
        if status == 401:
            return ConfluenceAuthError(
                401,
                url,
                "Confluence refused the credentials: check the email + API token (Cloud) or the "
                "personal access token (Data Center) and that the base URL is right",
            )
        reason = ""
        try:
            body = json.loads(raw)
            if isinstance(body, dict) and isinstance(body.get("message"), str):
                reason = ": " + self._scrub(body["message"])[:200]
        except (ValueError, UnicodeDecodeError):
            pass
        message = f"Confluence answered {status}{reason}"
        return ConfluenceError(status, url, message, retry_after)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text
