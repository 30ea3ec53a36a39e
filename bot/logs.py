"""Logging set-up: one line per event, text or JSON, with every configured secret redacted."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

REDACTED = "[redacted]"


class RedactSecrets(logging.Filter):
    """Replace any configured secret that slipped into a message or its arguments."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        # Longest first so a secret containing another is redacted whole.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            record.msg = self.redact(record.getMessage())
            record.args = None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["error"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(*, level: str = "INFO", fmt: str = "text", secrets: Sequence[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactSecrets(secrets))
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries that log request URLs or bodies at INFO stay at WARNING.
    for noisy in ("aiohttp.access", "httpx", "httpx2", "openai", "slack_sdk", "slack_bolt", "apscheduler", "pgserver",
                  "sentence_transformers", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # asyncpg warns with a full traceback each time it fails to refill a pool while the database is down;
    # askdocs reports that outage itself, once, in words.
    logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)
