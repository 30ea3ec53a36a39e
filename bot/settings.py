"""Settings: the one reader of the environment (and `.env`).

Every other module receives plain values from here; secrets stay `SecretStr` until a header is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CommaList = Annotated[list[str], NoDecode]

DEFAULT_SLACK_API_URL = "https://slack.com/api/"


class SettingsError(Exception):
    """A configuration value is missing or malformed; the message names the variable."""


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """askdocs configuration, from environment variables (upper-case names) and `.env`."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False,
        # `EMBEDDING_PROVIDER=` as copied from .env.example means "default", not "the empty string".
        env_ignore_empty=True,
    )

    database_url: SecretStr | None = None
    askdocs_data_dir: Path = Field(default_factory=lambda: platformdirs.user_data_path("askdocs"))

    confluence_base_url: str | None = None
    confluence_email: str | None = None
    confluence_api_token: SecretStr | None = None
    confluence_pat: SecretStr | None = None
    confluence_spaces: CommaList = Field(default_factory=list)
    confluence_include_restricted: bool = False
    confluence_max_concurrency: int = Field(default=4, ge=1, le=32)
    # Scoped API tokens reach Cloud only through https://api.atlassian.com/ex/confluence/{cloudId}: give that
    # as CONFLUENCE_BASE_URL, or the site URL plus its cloud id (https://<site>/_edge/tenant_info shows it).
    confluence_cloud_id: str | None = None
    confluence_include_attachments: bool = True
    confluence_include_comments: bool = True
    confluence_include_blogposts: bool = True
    confluence_attachment_max_mb: float = Field(default=20, gt=0, le=1024)
    confluence_attachment_types: CommaList = Field(
        default_factory=lambda: ["pdf", "docx", "pptx", "xlsx", "csv", "md", "txt"]
    )
    # Issue 15, README "Who sees what": public answers everyone from pages without read restrictions;
    # per-user indexes every page and answers each audience only from pages it may read.
    confluence_permissions: Literal["public", "per-user"] = "public"
    confluence_all_users_group: str = "confluence-users"
    permissions_sync_minutes: float = Field(default=60, gt=0)

    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = DEFAULT_SLACK_API_URL
    slack_ops_channel: str | None = None
    slack_admin_users: CommaList = Field(default_factory=list)
    slack_channel_spaces: CommaList = Field(default_factory=list)
    slack_allow_guests: bool = False  # single- and multi-channel guests (users.info is_restricted / _ultra_)
    slack_allow_external: bool = False  # Slack Connect: people of another workspace in a shared channel

    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    embedding_provider: Literal["local", "openai"] | None = None
    embedding_model: str | None = None
    llm_provider: Literal["openai", "none"] | None = None
    llm_model: str = "gpt-4o-mini"
    # Let the chat model write a wiki-style passage to search with (one more model call per question).
    llm_query_rewrite: bool = False

    sync_interval_hours: float = Field(default=24, gt=0)
    sync_max_delete_fraction: float = Field(default=0.5, ge=0, le=1)
    query_log_retention_days: int = Field(default=180, ge=0)  # 0 keeps the query log forever
    api_host: str | None = None
    api_port: int = Field(default=8080, ge=0, le=65535)
    api_key: SecretStr | None = None
    log_format: Literal["text", "json"] = "text"
    log_level: str | None = None  # default: INFO for `askdocs run`, WARNING for one-shot commands

    @field_validator(
        "confluence_spaces", "slack_admin_users", "slack_channel_spaces", "confluence_attachment_types",
        mode="before",
    )
    @classmethod
    def _comma_lists(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("confluence_base_url", "openai_base_url", mode="after")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("slack_api_url", mode="after")
    @classmethod
    def _slack_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value if value.endswith("/") else value + "/"

    @model_validator(mode="after")
    def _provider_defaults(self) -> Settings:
        # With an OpenAI key the hosted providers are the default; without one, everything stays local.
        has_key = self.openai_api_key is not None and self.openai_api_key.get_secret_value() != ""
        if self.embedding_provider is None:
            self.embedding_provider = "openai" if has_key else "local"
        if self.llm_provider is None:
            self.llm_provider = "openai" if has_key else "none"
        if (self.embedding_provider == "openai" or self.llm_provider == "openai") and not has_key:
            raise ValueError("OPENAI_API_KEY is required when EMBEDDING_PROVIDER or LLM_PROVIDER is openai")
        return self

    @property
    def resolved_embedding_model(self) -> str:
        if self.embedding_model:
            return self.embedding_model
        return "text-embedding-3-small" if self.embedding_provider == "openai" else "all-MiniLM-L6-v2"

    @property
    def channel_spaces(self) -> dict[str, list[str]]:
        """`SLACK_CHANNEL_SPACES=C123:ENG+OPS,C456:HR!` → {"C123": ["ENG", "OPS"], "C456": ["HR"]}.

        A trailing `!` locks the entry (`locked_channels`): `in:SPACE` can't widen it there."""
        mapping: dict[str, list[str]] = {}
        for item in self.slack_channel_spaces:
            channel, _, spaces = item.partition(":")
            keys = [key.strip() for key in spaces.strip().removesuffix("!").split("+") if key.strip()]
            if channel.strip() and keys:
                mapping[channel.strip()] = keys
        return mapping

    @property
    def locked_channels(self) -> frozenset[str]:
        """Channels whose SLACK_CHANNEL_SPACES entry ends in `!`: answers there use only the mapped spaces."""
        return frozenset(
            item.partition(":")[0].strip() for item in self.slack_channel_spaces
            if item.strip().endswith("!") and item.partition(":")[0].strip()
        )

    @property
    def per_user_permissions(self) -> bool:
        return self.confluence_permissions == "per-user"

    @property
    def confluence_configured(self) -> bool:
        return bool(self.confluence_base_url) and (
            self.confluence_pat is not None
            or (self.confluence_email is not None and self.confluence_api_token is not None)
        )

    @property
    def slack_configured(self) -> bool:
        return self.slack_bot_token is not None and self.slack_app_token is not None

    def secrets(self) -> list[str]:
        """Every secret value set, so log filters and tests can make sure none is ever emitted."""
        values = [
            self.database_url,
            self.confluence_api_token,
            self.confluence_pat,
            self.slack_bot_token,
            self.slack_app_token,
            self.openai_api_key,
            self.api_key,
        ]
        return [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    location = first.get("loc") or ()
    name = str(location[0]).upper() if location else ""
    message = first.get("msg", "invalid value").removeprefix("Value error, ")
    if name:
        return f"configuration error: {name}: {message}"
    return f"configuration error: {message}"


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Read settings, turning pydantic's report into one line that names the variable."""
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as error:
        raise SettingsError(_describe(error)) from None
