"""The real ConfluenceClient against the Confluence emulator: listings, bodies, auth, retries, limits."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from ingest.confluence import ConfluenceClient, RetryPolicy
from ingest.errors import ConfluenceAuthError, ConfluenceBlocked, ConfluenceError, ListingIncomplete, PageForbidden
from tests.emulators.confluence import ConfluenceEmulator

EMAIL, TOKEN, PAT = "bot@example.com", "cloud-token-123", "dc-pat-456"
FAST = RetryPolicy(attempts=5, base_delay_s=0.01, max_delay_s=0.05, max_retry_after_s=0.05)


@pytest.fixture
async def confluence() -> AsyncIterator[ConfluenceEmulator]:
    async with ConfluenceEmulator(email=EMAIL, api_token=TOKEN, pat=PAT) as emulator:
        yield emulator


def make_client(
    emulator: ConfluenceEmulator,
    flavour: str,
    *,
    retry: RetryPolicy = FAST,
    page_size: int = 100,
    max_concurrency: int = 4,
    timeout_s: float = 30,
) -> ConfluenceClient:
    """A Cloud (email + token) or Data Center (PAT) client aimed at the emulator."""
    assert emulator.base_url is not None
    cloud = flavour == "cloud"
    return ConfluenceClient(
        emulator.base_url,
        email=EMAIL if cloud else None,
        api_token=TOKEN if cloud else None,
        pat=None if cloud else PAT,
        retry=retry,
        page_size=page_size,
        max_concurrency=max_concurrency,
        timeout_s=timeout_s,
    )


@pytest.fixture(params=["cloud", "dc"])
async def client(
    request: pytest.FixtureRequest, confluence: ConfluenceEmulator
) -> AsyncIterator[ConfluenceClient]:
    async with make_client(confluence, str(request.param)) as c:
        yield c


def add_pages(
    emulator: ConfluenceEmulator, space_key: str, n: int, *, modified_at: datetime | None = None
) -> list[str]:
    return [
        emulator.add_page(space_key, f"Page {i:03d}", f"<p>body {i}</p>", modified_at=modified_at)
        for i in range(n)
    ]


async def test_listing_returns_every_current_page_exactly_once(
    client: ConfluenceClient, confluence: ConfluenceEmulator
) -> None:
    ids = add_pages(confluence, "ENG", 260)
    confluence.archive_page(ids[7])
    confluence.add_page("OPS", "Elsewhere", "<p>x</p>")
    refs = await client.list_pages("ENG")
    assert sorted(r.page_id for r in refs) == sorted(i for i in ids if i != ids[7])
    assert len({r.page_id for r in refs}) == len(refs) == 259
    assert all(r.version == 1 and r.space_key == "ENG" and r.status == "current" for r in refs)
    assert confluence.bodies_served == 0
    listing = "/pages" if client.is_cloud else "/rest/api/content"
    assert confluence.count(listing) == 3  # 100 + 100 + 59: followed `_links.next` to the end


async def test_listing_follows_next_when_server_caps_the_page_size(confluence: ConfluenceEmulator) -> None:
    add_pages(confluence, "ENG", 130)
    async with make_client(confluence, "dc", page_size=500) as dc:  # the server gives 100 at most
        assert len(await dc.list_pages("ENG")) == 130
    assert confluence.count("/rest/api/content") == 2


async def test_cloud_listing_follows_the_link_header_too(confluence: ConfluenceEmulator) -> None:
    ids = add_pages(confluence, "ENG", 60)
    confluence.v2_next_in_body = False
    async with make_client(confluence, "cloud", page_size=25) as c:
        assert sorted(r.page_id for r in await c.list_pages("ENG")) == sorted(ids)
    assert confluence.count("/pages") == 3


async def test_cloud_base_url_ending_in_wiki_is_not_doubled(confluence: ConfluenceEmulator) -> None:
    confluence.add_page("ENG", "Home", "<p>hi</p>")
    assert confluence.base_url is not None
    wiki_url = confluence.base_url + "/wiki/"
    async with ConfluenceClient(wiki_url, email=EMAIL, api_token=TOKEN, retry=FAST) as c:
        space = await c.get_space("ENG")
        assert [r.title for r in await c.list_pages("ENG")] == ["Home"]
    assert space.url == f"{confluence.base_url}/wiki/spaces/ENG"
    assert not any("/wiki/wiki" in path for _, path, _ in confluence.requests)


async def test_fetch_page_has_body_breadcrumb_labels_restriction_and_link(
    client: ConfluenceClient, confluence: ConfluenceEmulator
) -> None:
    confluence.add_page("ENG", "Engineering", "<p>root</p>")
    confluence.add_page("ENG", "Guides", "<p>g</p>", parent_title="Engineering")
    page_id = confluence.add_page(
        "ENG", "Deploy Guide", "<h1>Deploys</h1>",
        parent_title="Guides", labels=("howto", "ops"), restricted=True,
    )
    confluence.edit_page(page_id, body="<h1>Deploys</h1><p>Rollbacks need approval.</p>")
    page = await client.fetch_page(page_id)
    assert page.body == "<h1>Deploys</h1><p>Rollbacks need approval.</p>"
    assert (page.page_id, page.space_key, page.title, page.version) == (page_id, "ENG", "Deploy Guide", 2)
    assert page.ancestors == ("Engineering", "Guides")
    assert page.breadcrumb == "Engineering > Guides > Deploy Guide"
    assert page.labels == ("howto", "ops")
    assert page.restricted is True
    assert page.last_modified is not None and page.last_modified.tzinfo is not None
    assert abs(page.last_modified - datetime.now(UTC)) < timedelta(minutes=1)
    if client.is_cloud:
        assert page.url == f"{confluence.base_url}/wiki/spaces/ENG/pages/{page_id}/Deploy+Guide"
    else:
        assert page.url == f"{confluence.base_url}/display/ENG/Deploy+Guide"
    plain = await client.fetch_page(confluence.find("Engineering"))
    assert (plain.restricted, plain.ancestors, plain.labels) == (False, (), ())


@pytest.mark.parametrize("flavour", ["cloud", "dc"])
async def test_wrong_credentials_give_auth_error_without_the_secret(
    flavour: str, confluence: ConfluenceEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    confluence.add_space("ENG", "Engineering")
    assert confluence.base_url is not None
    secret = "s3cr3t-wr0ng-t0ken"
    if flavour == "cloud":
        bad = ConfluenceClient(confluence.base_url, email=EMAIL, api_token=secret, retry=FAST)
    else:
        bad = ConfluenceClient(confluence.base_url, pat=secret, retry=FAST)
    async with bad:
        with pytest.raises(ConfluenceAuthError) as caught:
            await bad.get_space("ENG")
    err = caught.value
    assert err.status == 401
    assert "credentials" in str(err)
    for text in (str(err), repr(err), repr(bad), caplog.text):
        assert secret not in text
    assert confluence.count() == 1  # 401 is not retried


async def test_emulator_answers_401_json_without_auth(confluence: ConfluenceEmulator) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{confluence.base_url}/wiki/api/v2/spaces") as resp:
            assert resp.status == 401
            assert (await resp.json())["statusCode"] == 401


async def test_rate_limit_retry_after_is_waited_and_survived(confluence: ConfluenceEmulator) -> None:
    confluence.add_space("ENG", "Engineering")
    confluence.fail_next(status=429, retry_after=1)
    policy = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.05, max_retry_after_s=2.0)
    async with make_client(confluence, "cloud", retry=policy) as c:
        started = time.monotonic()
        space = await c.get_space("ENG")
        waited = time.monotonic() - started
    assert space.key == "ENG"
    assert 0.9 <= waited < 3.0  # backoff alone would be ~0.01 s
    assert confluence.count("/spaces") == 2


async def test_long_retry_after_is_clamped_and_absurd_one_is_a_blocked_error(
    client: ConfluenceClient, confluence: ConfluenceEmulator
) -> None:
    page_id = confluence.add_page("ENG", "Home", "<p>hi</p>")
    confluence.fail_next(status=503, retry_after=60)
    confluence.fail_next(status=429, retry_after=120)
    started = time.monotonic()
    assert (await client.fetch_page(page_id)).title == "Home"
    assert time.monotonic() - started < 2.0  # FAST clamps Retry-After to 0.05 s
    confluence.fail_next(status=503, retry_after=9223372036854775807)  # seen in the wild: blocked, no sleep
    with pytest.raises(ConfluenceBlocked):
        await client.fetch_page(page_id)


async def test_server_error_burst_is_survived(
    client: ConfluenceClient, confluence: ConfluenceEmulator
) -> None:
    add_pages(confluence, "ENG", 120)
    confluence.fail_next(2, status=500, path_contains="start=100" if not client.is_cloud else "cursor=")
    confluence.fail_next(2, status=502)
    assert len(await client.list_pages("ENG")) == 120


async def test_truncated_json_and_connection_reset_are_retried(
    client: ConfluenceClient, confluence: ConfluenceEmulator
) -> None:
    page_id = confluence.add_page("ENG", "Home", "<p>" + "long body " * 200 + "</p>")
    confluence.truncate_next()
    confluence.reset_next()
    page = await client.fetch_page(page_id)
    assert page.body.endswith("long body </p>")
    assert confluence.count(confluence.body_path(page_id, cloud=client.is_cloud)) == 3


async def test_timeout_is_retried(confluence: ConfluenceEmulator) -> None:
    page_id = confluence.add_page("ENG", "Home", "<p>hi</p>")
    confluence.slow_next(0.4)
    async with make_client(confluence, "cloud", timeout_s=0.1) as c:
        assert (await c.fetch_page(page_id)).title == "Home"
    assert confluence.count(confluence.body_path(page_id)) == 2


async def test_retries_end_by_raising_the_last_failure(
    client: ConfluenceClient, confluence: ConfluenceEmulator
) -> None:
    page_id = confluence.add_page("ENG", "Home", "<p>hi</p>")
    confluence.fail_next(50, status=503)
    with pytest.raises(ConfluenceError) as caught:
        await client.fetch_page(page_id)
    assert caught.value.status == 503
    assert confluence.count(confluence.body_path(page_id, cloud=client.is_cloud)) == FAST.attempts


async def test_missing_page_is_a_404_and_not_retried(
    client: ConfluenceClient, confluence: ConfluenceEmulator
) -> None:
    confluence.add_space("ENG", "Engineering")
    with pytest.raises(ConfluenceError) as caught:
        await client.fetch_page("424242")
    assert caught.value.status == 404
    # Data Center asks once more without the ancestors' restrictions expand, which 404s on its own under a
    # draft ancestor (CONFCLOUD-77618); neither is retried.
    assert confluence.count(confluence.body_path("424242", cloud=client.is_cloud)) == (1 if client.is_cloud else 2)


async def test_forbidden_page_raises_page_forbidden(
    client: ConfluenceClient, confluence: ConfluenceEmulator
) -> None:
    page_id = confluence.add_page("ENG", "Secret", "<p>x</p>")
    confluence.forbid_page(page_id)
    with pytest.raises(PageForbidden) as caught:
        await client.fetch_page(page_id)
    assert caught.value.status == 403
    assert confluence.count(confluence.body_path(page_id, cloud=client.is_cloud)) == 1


async def test_listing_that_keeps_failing_raises_listing_incomplete(
    client: ConfluenceClient, confluence: ConfluenceEmulator
) -> None:
    add_pages(confluence, "ENG", 260)
    confluence.fail_listing_after(pages=100)
    with pytest.raises(ListingIncomplete) as caught:
        await client.list_pages("ENG")
    err = caught.value
    assert err.space_key == "ENG" and err.pages_listed == 100
    assert isinstance(err.cause, ConfluenceError) and err.cause.status == 500
    assert err.__cause__ is err.cause


async def test_current_versions_reports_edits_and_deletions(
    client: ConfluenceClient, confluence: ConfluenceEmulator
) -> None:
    same, edited, deleted, archived = add_pages(confluence, "ENG", 4)
    confluence.edit_page(edited, body="<p>new</p>")
    confluence.edit_page(edited, body="<p>newer</p>")
    confluence.delete_page(deleted)
    confluence.archive_page(archived)
    versions = await client.current_versions([same, edited, deleted, archived, "not-an-id"])
    assert versions == {same: 1, edited: 3, deleted: None, archived: None, "not-an-id": None}


async def test_current_versions_batches_many_ids(confluence: ConfluenceEmulator) -> None:
    ids = add_pages(confluence, "ENG", 300)
    async with make_client(confluence, "cloud") as c:
        versions = await c.current_versions(ids)
    assert versions == dict.fromkeys(ids, 1)
    assert confluence.count("/api/v2/pages") == 2  # at most 250 ids per request


@pytest.mark.parametrize("flavour", ["cloud", "dc"])
async def test_changed_since_finds_recent_edits_with_an_hour_of_overlap(
    flavour: str, confluence: ConfluenceEmulator
) -> None:
    now = datetime.now(UTC)
    old = add_pages(confluence, "ENG", 60, modified_at=now - timedelta(days=3))
    confluence.add_page("OPS", "Other space", "<p>x</p>")
    edited = old[:30]
    for page_id in edited:
        confluence.edit_page(page_id, body="<p>changed</p>")
    near = confluence.add_page("ENG", "Just before", "<p>x</p>", modified_at=now - timedelta(minutes=90))
    async with make_client(confluence, flavour, page_size=10) as client:
        refs = await client.changed_since("ENG", now - timedelta(hours=1))
    assert sorted(r.page_id for r in refs) == sorted([*edited, near])
    assert all(r.version == 2 and r.space_key == "ENG" for r in refs if r.page_id != near)
    assert confluence.count("/content/search") == 4  # 31 results, 10 per page: `_links.next` was followed
    _, _, query = confluence.requests[0]
    assert "lastmodified" in query


async def test_concurrency_is_bounded(confluence: ConfluenceEmulator) -> None:
    ids = add_pages(confluence, "ENG", 12)
    confluence.slow_next(0.05, 12)
    async with make_client(confluence, "cloud", max_concurrency=3) as c:
        pages = await asyncio.gather(*(c.fetch_page(i) for i in ids))
    assert [p.page_id for p in pages] == ids
    assert confluence.max_in_flight == 3
