"""Pure values of the question path: chat messages, conversation turns, sources, answers, who asked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]

# The longest question any surface takes. Longer ones are cut there (the answer says so, `truncated`);
# the HTTP API refuses them with a 400 instead, since a script can shorten its own request.
MAX_QUESTION_CHARS = 10_000


class QuestionError(ValueError):
    """The question can't be answered as asked (empty); the message is for the user."""


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a chat prompt."""

    role: Role
    content: str


@dataclass(frozen=True)
class Turn:
    """One message of a conversation (a Slack thread): who spoke and what they said."""

    role: str  # "user" | "assistant"
    text: str


@dataclass(frozen=True)
class Source:
    n: int
    title: str
    url: str
    space_key: str
    page_id: str
    score: float
    breadcrumb: str = ""
    version: int = 0
    # A file attached to the page: `title` reads "file name (on Page title)", `url` links the file, and
    # `page_id` (and `version`) stay the page's, so freshness checks the page the file hangs on.
    attachment_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = {"n": self.n, "title": self.title, "url": self.url, "space_key": self.space_key,
                "page_id": self.page_id, "score": round(self.score, 6)}
        if self.attachment_id is not None:
            data["attachment_id"] = self.attachment_id
        return data


@dataclass(frozen=True)
class AskContext:
    """Who asked, where: recorded in the query log."""

    surface: str = "cli"
    user_id: str | None = None
    channel_id: str | None = None
    thread_ts: str | None = None


@dataclass(frozen=True)
class Answer:
    question: str
    standalone_question: str
    text: str
    sources: list[Source]
    refused: bool
    latency_ms: int
    top_score: float | None = None
    closest: list[Source] = field(default_factory=list)
    chunks_used: int = 0
    mode: str = "extractive"
    truncated: bool = False
    query_id: int | None = None
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "answer": self.text,
            "sources": [s.to_json() for s in self.sources],
            "latency_ms": self.latency_ms,
            "refused": self.refused,
            "closest": [s.to_json() for s in self.closest],
            "chunks_used": self.chunks_used,
            "query_id": self.query_id,
            "mode": self.mode,
            "note": self.note,
            "truncated": self.truncated,
        }
