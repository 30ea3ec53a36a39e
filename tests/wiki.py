"""Test content: the sample storage-format pages, and many realistic variants of them for big spaces."""

from __future__ import annotations

import json
from pathlib import Path

from tests.emulators.confluence import ConfluenceEmulator

SAMPLES = Path(__file__).parent / "samples"
DEMO_PAGES = Path(__file__).parent.parent / "bot" / "demo" / "pages.jsonl"
TEAMS = ["Payments", "Search", "Identity", "Billing", "Mobile", "Data", "Platform", "Growth", "Support",
         "Security", "Infra", "Checkout", "Ledger", "Risk", "Notifications", "Catalog", "Pricing", "Maps",
         "Media", "Sync", "Reports", "Accounts", "Onboarding", "Partners", "Fleet", "Warehouse", "Routing",
         "Labs", "Edge", "Desktop", "Insights", "Messaging", "Storage", "Compute", "Audit", "Compliance",
         "Trust", "Ads", "Loyalty", "Shipping"]


def sample(name: str) -> str:
    return (SAMPLES / f"{name}.xml").read_text(encoding="utf-8")


def sample_names() -> list[str]:
    return sorted(p.stem for p in SAMPLES.glob("*.xml"))


def add_samples(confluence: ConfluenceEmulator, space_key: str = "ENG") -> dict[str, str]:
    """Every sample page once, titled from its file name; returns title → page id."""
    if space_key not in confluence.spaces:
        confluence.add_space(space_key, "Engineering")
    ids = {}
    for name in sample_names():
        title = name.replace("_", " ").title()
        ids[title] = confluence.add_page(space_key, title, sample(name), labels=("sample",))
    return ids


def add_team_pages(confluence: ConfluenceEmulator, space_key: str, count: int) -> list[str]:
    """`count` pages: each sample rewritten for one team, so facts differ from page to page."""
    if space_key not in confluence.spaces:
        confluence.add_space(space_key, f"Space {space_key}")
    bodies = [(name, sample(name)) for name in sample_names()]
    ids = []
    for i in range(count):
        name, body = bodies[i % len(bodies)]
        team = TEAMS[(i // len(bodies)) % len(TEAMS)]
        variant = i // (len(bodies) * len(TEAMS))
        text = body.replace("payments", team.lower()).replace("Payments", team)
        text += f"<p>This page is maintained by the {team} team (copy {variant}, item {i}).</p>"
        title = f"{team} {name.replace('_', ' ').title()}" + (f" {variant}" if variant else "")
        ids.append(confluence.add_page(space_key, title, text, labels=(team.lower(),)))
    return ids


def add_demo_pages(confluence: ConfluenceEmulator, space_key: str = "PG", limit: int | None = None) -> int:
    """The demo space's real PostgreSQL manual pages, parents first."""
    confluence.add_space(space_key, "PostgreSQL Manual")
    pages = [json.loads(line) for line in DEMO_PAGES.read_text(encoding="utf-8").splitlines() if line.strip()]
    pages = pages[:limit] if limit else pages
    titles = {p["title"] for p in pages}
    added: set[str] = set()
    while len(added) < len(pages):
        progressed = False
        for page in pages:
            parent = page.get("parent_title")
            if page["title"] in added or (parent in titles and parent not in added):
                continue
            confluence.add_page(space_key, page["title"], page["body"],
                                parent_title=parent if parent in titles else None,
                                labels=tuple(page.get("labels") or ()))
            added.add(page["title"])
            progressed = True
        if not progressed:
            break
    return len(added)
