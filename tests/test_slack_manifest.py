"""manifest.yml checked against what Slack's manifest schema (slackapi/manifest-schema) and the AI-app docs
say, and against what bot/slack actually uses: an admin installing from it gets a working native AI app."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.slack import blocks

ROOT = Path(__file__).resolve().parent.parent
# Top-level and features keys the schema allows (additionalProperties: false), plus agent_view (2026).
TOP_LEVEL = {"_metadata", "display_information", "features", "oauth_config", "settings", "app_directory",
             "functions", "workflows", "datastores", "outgoing_domains", "types", "external_auth_providers"}
FEATURES = {"app_home", "bot_user", "functions", "shortcuts", "slash_commands", "workflow_steps",
            "unfurl_domains", "assistant_view", "agent_view"}
MAX_AGENT_DESCRIPTION_CHARS = 300
MAX_SUGGESTED_PROMPTS = 4
# Every event askdocs listens to, and the bot scope Slack requires for it (docs.slack.dev, Events API).
EVENT_SCOPES = {"app_home_opened": None, "app_mention": "app_mentions:read",
                "message.channels": "channels:history", "message.groups": "groups:history",
                "message.im": "im:history", "message.mpim": "mpim:history"}


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "manifest.yml").read_text(encoding="utf-8"))
    return data


def test_manifest_keeps_to_the_schema(manifest: dict[str, Any]) -> None:
    assert set(manifest) <= TOP_LEVEL and set(manifest["features"]) <= FEATURES
    info = manifest["display_information"]
    assert 1 <= len(info["name"]) <= 35 and 1 <= len(info["description"]) <= 140
    assert re.fullmatch(r"#[0-9a-fA-F]{6}", info["background_color"])
    assert 1 <= len(manifest["features"]["bot_user"]["display_name"]) <= 80
    for command in manifest["features"]["slash_commands"]:
        assert re.fullmatch(r"/[a-z0-9_-]{1,31}", command["command"]) and command["description"]
    scopes = manifest["oauth_config"]["scopes"]["bot"]
    events = manifest["settings"]["event_subscriptions"]["bot_events"]
    assert len(scopes) == len(set(scopes)) and len(events) == len(set(events))
    assert all(len(s) <= 50 for s in scopes + events)


def test_agent_view_declares_the_ai_app_with_its_scope(manifest: dict[str, Any]) -> None:
    agent = manifest["features"]["agent_view"]
    assert set(agent) <= {"agent_description", "suggested_prompts"}
    assert 0 < len(agent["agent_description"]) <= MAX_AGENT_DESCRIPTION_CHARS
    prompts = agent["suggested_prompts"]
    assert 1 <= len(prompts) <= MAX_SUGGESTED_PROMPTS
    assert all(set(p) == {"title", "message"} and p["title"] and p["message"] for p in prompts)
    # The Messages tab offers the same prompts the manifest advertises.
    assert [(p["title"], p["message"]) for p in prompts] == list(blocks.SUGGESTED_PROMPTS)
    assert "assistant:write" in manifest["oauth_config"]["scopes"]["bot"]
    home = manifest["features"]["app_home"]
    assert home["messages_tab_enabled"] and not home["messages_tab_read_only_enabled"]
    assert "assistant_view" not in manifest["features"]  # legacy; agent_view replaces it


def test_every_event_has_its_scope_and_group_dms_are_in(manifest: dict[str, Any]) -> None:
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert events == set(EVENT_SCOPES)
    assert {scope for scope in EVENT_SCOPES.values() if scope} <= scopes
    assert {"chat:write", "commands"} <= scopes
    assert manifest["settings"]["socket_mode_enabled"] and manifest["settings"]["interactivity"]["is_enabled"]
