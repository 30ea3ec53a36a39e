"""Dockerfile, docker-compose.yml and .dockerignore, read as data (there is no Docker engine here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from bot.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    pairs = []
    for line in logical:
        instruction, _, arguments = line.partition(" ")
        pairs.append((instruction.upper(), arguments.strip()))
    return pairs


def instructions(name: str) -> list[str]:
    return [arguments for instruction, arguments in dockerfile() if instruction == name]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for arguments in instructions("ENV"):
        env.update(dict(re.findall(r"(\w+)=(\S+)", arguments)))
    return env


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return data


def settings_variables() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


def env_example_variables() -> set[str]:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def as_mapping(environment: dict[str, Any] | list[str]) -> dict[str, str]:
    if isinstance(environment, dict):
        return {key: str(value) for key, value in environment.items()}
    return dict(item.split("=", 1) for item in environment)


def test_database_service_is_pgvector_with_a_volume_and_a_healthcheck(compose: dict[str, Any]) -> None:
    db = compose["services"]["db"]
    assert db["image"] == "pgvector/pgvector:pg16"
    env = as_mapping(db["environment"])
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= set(env)
    [mount] = db["volumes"]
    volume, _, target = mount.partition(":")
    assert volume in compose["volumes"] and target == "/var/lib/postgresql/data"
    check = " ".join(db["healthcheck"]["test"])
    assert "pg_isready" in check and env["POSTGRES_USER"] in check and env["POSTGRES_DB"] in check


def test_askdocs_service_waits_for_a_healthy_database(compose: dict[str, Any]) -> None:
    app = compose["services"]["askdocs"]
    assert app["build"] in (".", {"context": "."})
    assert app["env_file"] in (".env", [".env"])
    assert app["depends_on"]["db"]["condition"] == "service_healthy"
    assert app["restart"] == "unless-stopped"
    port = Settings.model_fields["api_port"].default
    assert f"{port}:{port}" in app["ports"]

    db_env = as_mapping(compose["services"]["db"]["environment"])
    url = urlsplit(as_mapping(app["environment"])["DATABASE_URL"])
    assert url.scheme.startswith("postgres") and url.hostname == "db" and url.port == 5432
    assert url.username == db_env["POSTGRES_USER"] and url.path == "/" + db_env["POSTGRES_DB"]


def test_every_variable_compose_or_the_image_sets_is_a_documented_setting(compose: dict[str, Any]) -> None:
    ours = set(as_mapping(compose["services"]["askdocs"]["environment"]))
    ours |= {name for name in dockerfile_env() if name.startswith(("API_", "ASKDOCS_", "DATABASE_"))}
    assert ours <= settings_variables(), ours - settings_variables()
    assert ours <= env_example_variables(), ours - env_example_variables()


def test_image_runs_askdocs_as_a_non_root_user_with_a_health_check() -> None:
    [base] = instructions("FROM")
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", base)
    users = instructions("USER")
    assert users and users[-1] not in ("root", "0")
    assert instructions("CMD") == ['["askdocs", "run"]']
    port = Settings.model_fields["api_port"].default
    assert instructions("EXPOSE") == [str(port)]
    env = dockerfile_env()
    assert env["HF_HUB_OFFLINE"] == "1" and env["API_HOST"] == "0.0.0.0" and env["API_PORT"] == str(port)

    [check] = instructions("HEALTHCHECK")
    assert "/healthz" in check and "urllib.request" in check and "curl" not in check
    # The check reads the same port the app listens on.
    assert "API_PORT" in check and f"'{port}'" in check

    installs = " ".join(instructions("RUN"))
    assert "torch==2.13.0" in installs and "download.pytorch.org/whl/cpu" in installs
    assert 'pip install ".[local]"' in installs


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_build_context() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()}
    assert {".env", ".git", ".venv"} <= ignored
    copied = {arguments.split()[0] for arguments in instructions("COPY")}
    assert not copied & ignored, "the Dockerfile copies something .dockerignore leaves out"
