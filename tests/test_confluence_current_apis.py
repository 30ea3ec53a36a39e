"""Current Confluence APIs (issue 14): Cloud bodies through REST v2 while v1 content answers 410 Gone, the
api.atlassian.com gateway base URL used as given (next links keep its prefix), and ancestors whose
restrictions expand 404s (a draft or trashed ancestor) never making a page look deleted."""

from __future__ import annotations

import pytest

from ingest.confluence import ConfluenceClient
from tests.emulators.confluence import ConfluenceEmulator
from tests.test_confluence_client import EMAIL, FAST, TOKEN, make_client


@pytest.fixture
async def confluence():  # type: ignore[no-untyped-def]
    from tests.test_confluence_client import PAT

    async with ConfluenceEmulator(email=EMAIL, api_token=TOKEN, pat=PAT) as emulator:
        yield emulator


def v1_content_gets(confluence: ConfluenceEmulator) -> list[str]:
    """v1 `GET …/rest/api/content/{id}` requests (not search, listings, restrictions or downloads)."""
    return [path for _, path, _ in confluence.requests
            if "/rest/api/content/" in path and path.rsplit("/", 1)[-1].isdigit()]


async def test_cloud_bodies_come_from_v2_while_v1_content_is_gone(confluence: ConfluenceEmulator) -> None:
    confluence.v1_content_gone = True
    confluence.add_page("ENG", "Engineering", "<p>root</p>", restricted=True)
    page_id = confluence.add_page("ENG", "Runbook", "<p>Restart the pods.</p>", parent_title="Engineering",
                                  labels=("ops",))
    post_id = confluence.add_blogpost("ENG", "Launch", "<p>We launched.</p>")
    async with make_client(confluence, "cloud") as client:
        page = await client.fetch_page(page_id)
        post = await client.fetch_page(post_id)  # no kind given: a page first, then a blog post
        versions = await client.current_versions([page_id, post_id, "999"])
    assert (page.body, page.ancestors, page.labels, page.restricted) == (
        "<p>Restart the pods.</p>", ("Engineering",), ("ops",), True)
    assert (post.title, post.content_type, post.restricted) == ("Launch", "blogpost", False)
    assert versions == {page_id: 1, post_id: 1, "999": None}
    assert v1_content_gets(confluence) == []
    assert confluence.count(f"/api/v2/pages/{page_id}?body-format=storage") == 1


@pytest.mark.parametrize("link_header_only", [False, True])
async def test_gateway_base_url_is_used_as_given_and_next_links_keep_its_prefix(
    confluence: ConfluenceEmulator, link_header_only: bool
) -> None:
    confluence.v1_content_gone = True
    confluence.v2_next_in_body = not link_header_only
    ids = [confluence.add_page("ENG", f"Page {i}", f"<p>body {i}</p>") for i in range(7)]
    assert confluence.base_url is not None
    gateway = f"{confluence.base_url}/ex/confluence/{confluence.cloud_id}"
    async with ConfluenceClient(gateway, email=EMAIL, api_token=TOKEN, retry=FAST, page_size=3) as client:
        refs = await client.list_pages("ENG")
        page = await client.fetch_page(ids[0])
    assert sorted(r.page_id for r in refs) == sorted(ids)
    assert all(path.startswith(f"/ex/confluence/{confluence.cloud_id}/wiki/") for _, path, _ in confluence.requests)
    assert confluence.count("/spaces/") >= 3  # three listing pages, the later two from next links
    # Links for readers point at the site (`_links.base`), never at the gateway.
    assert page.url.startswith(f"{confluence.base_url}/wiki/spaces/ENG/pages/{ids[0]}")


async def test_cloud_id_with_the_site_url_goes_through_the_gateway(confluence: ConfluenceEmulator) -> None:
    page_id = confluence.add_page("ENG", "Home", "<p>hi</p>")
    assert confluence.base_url is not None
    async with ConfluenceClient("https://acme.atlassian.net", email=EMAIL, api_token=TOKEN, retry=FAST,
                                cloud_id=confluence.cloud_id, gateway_url=confluence.base_url) as client:
        assert (await client.fetch_page(page_id)).title == "Home"
    assert confluence.requests and all(p.startswith("/ex/confluence/") for _, p, _ in confluence.requests)


@pytest.mark.parametrize("flavour", ["cloud", "dc"])
async def test_a_draft_ancestor_whose_restrictions_404_keeps_the_page(
    confluence: ConfluenceEmulator, flavour: str
) -> None:
    confluence.add_page("ENG", "Team", "<p>t</p>")
    confluence.add_page("ENG", "Draft parent", "<p>d</p>", parent_title="Team")
    page_id = confluence.add_page("ENG", "Child", "<p>Kept.</p>", parent_title="Draft parent")
    confluence.pages[confluence.find("Draft parent")].breaks_expand = True
    async with make_client(confluence, flavour) as client:
        page = await client.fetch_page(page_id)
        assert (page.body, page.restricted) == ("<p>Kept.</p>", False)
        confluence.pages[confluence.find("Team")].restricted = True  # still seen through the other ancestor
        client._restricted_ids.clear()  # a new sync run would start with an empty cache
        assert (await client.fetch_page(page_id)).restricted is True
