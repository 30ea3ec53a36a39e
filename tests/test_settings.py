"""Settings: names operators rely on, defaults, and one clear line for a bad value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.settings import SettingsError, load_settings

ALL_NAMES = [
    "DATABASE_URL", "ASKDOCS_DATA_DIR", "CONFLUENCE_BASE_URL", "CONFLUENCE_EMAIL", "CONFLUENCE_API_TOKEN",
    "CONFLUENCE_PAT", "CONFLUENCE_SPACES", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_API_URL",
    "SLACK_OPS_CHANNEL", "SLACK_ADMIN_USERS", "OPENAI_API_KEY", "OPENAI_BASE_URL", "EMBEDDING_PROVIDER",
    "EMBEDDING_MODEL", "LLM_PROVIDER", "LLM_MODEL", "SYNC_INTERVAL_HOURS", "API_HOST", "API_PORT", "API_KEY",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ALL_NAMES:
        monkeypatch.delenv(name, raising=False)


def test_defaults_run_locally_without_credentials() -> None:
    settings = load_settings(None)
    assert settings.embedding_provider == "local" and settings.llm_provider == "none"
    assert settings.llm_model == "gpt-4o-mini" and settings.sync_interval_hours == 24
    assert settings.api_port == 8080 and settings.slack_api_url == "https://slack.com/api/"


def test_an_openai_key_switches_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-abc")
    settings = load_settings(None)
    assert settings.embedding_provider == "openai" and settings.llm_provider == "openai"
    assert settings.openai_api_key is not None and "sk-abc" not in repr(settings)


def test_comma_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONFLUENCE_SPACES", "ENG, OPS,,HR ")
    monkeypatch.setenv("SLACK_ADMIN_USERS", "U1,U2")
    settings = load_settings(None)
    assert settings.confluence_spaces == ["ENG", "OPS", "HR"]
    assert settings.slack_admin_users == ["U1", "U2"]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("API_PORT", "eighty", "API_PORT"),
        ("SYNC_INTERVAL_HOURS", "-1", "SYNC_INTERVAL_HOURS"),
        ("EMBEDDING_PROVIDER", "cohere", "EMBEDDING_PROVIDER"),
        ("CONFLUENCE_BASE_URL", "acme.atlassian.net", "CONFLUENCE_BASE_URL"),
        ("LLM_PROVIDER", "openai", "OPENAI_API_KEY"),
    ],
)
def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                      expected: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(None)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_cli_prints_one_line_not_a_traceback(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("API_PORT=not-a-port\n")
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "--env-file", str(env_file), "status"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "askdocs: configuration error: API_PORT: Input should be a valid integer, "
        "unable to parse string as an integer"
    )


def test_env_example_documents_every_setting() -> None:
    example = (Path(__file__).parent.parent / ".env.example").read_text()
    for name in ALL_NAMES:
        assert f"{name}=" in example, name


def test_a_copy_of_env_example_loads(tmp_path: Path) -> None:
    example = (Path(__file__).parent.parent / ".env.example").read_text()
    env_file = tmp_path / ".env"
    env_file.write_text(example)
    settings = load_settings(env_file)
    assert settings.embedding_provider == "local" and settings.llm_provider == "none"
    assert settings.api_port == 8080 and settings.confluence_spaces == []


def test_permissions_default_to_public_and_slack_refuses_guests_and_other_workspaces() -> None:
    settings = load_settings(None)
    assert settings.confluence_permissions == "public" and not settings.per_user_permissions
    assert settings.confluence_all_users_group == "confluence-users" and settings.permissions_sync_minutes == 60
    assert settings.slack_allow_guests is False and settings.slack_allow_external is False


def test_channel_spaces_entries_ending_in_bang_are_locked() -> None:
    settings = load_settings(None, slack_channel_spaces="C1:ENG+OPS, C2:HR!")
    assert settings.channel_spaces == {"C1": ["ENG", "OPS"], "C2": ["HR"]}
    assert settings.locked_channels == frozenset({"C2"})
