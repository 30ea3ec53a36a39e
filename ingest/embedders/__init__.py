"""What the sync and the answer engine need from an embedding model, whichever one is configured.

Two implementations: `local.LocalEmbedder` (all-MiniLM-L6-v2 on CPU, no network) and
`openai.OpenAIEmbedder` (any OpenAI-compatible `/v1/embeddings`). Import them from their modules so
that choosing one never imports the other's dependencies (torch is slow to import).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ingest.errors import IngestError
from ingest.tokens import Tokenizer

__all__ = ["Embedder", "EmbeddingError", "Tokenizer"]


class EmbeddingError(IngestError):
    """An embedding request failed for good (after retries); the message is short and holds no secrets.

    `status` is the HTTP status when there was one; `attempts` how many requests were made, so the sync
    report can say "tried 5 times" instead of guessing.
    """

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.attempts = attempts


class Embedder(Protocol):
    """Turns texts into unit-length vectors; `tokenizer` counts in the model's own tokens.

    The chunker sizes chunks with `tokenizer` against `max_input_tokens`, so a chunk always fits the
    model instead of being silently truncated by it.
    """

    @property
    def model_name(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    @property
    def max_input_tokens(self) -> int: ...

    @property
    def tokenizer(self) -> Tokenizer: ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-normalised vector per text, in the order given."""
        ...

    async def aclose(self) -> None:
        """Release clients, threads or memory held by the model."""
        ...
