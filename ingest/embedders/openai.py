"""`OpenAIEmbedder`: embeddings from OpenAI or any OpenAI-compatible `/v1/embeddings` (vLLM, Ollama, Azure…).

Batches are bounded by input count and by tokens (OpenAI caps 2048 inputs and 300k tokens per request);
429, 5xx, timeouts and dropped connections are retried here with exponential backoff and jitter (the
client's own retries are off so the policy is ours, visible and testable).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from types import MappingProxyType
from typing import Final

import openai

from ingest.embedders import EmbeddingError
from ingest.openai_errors import failure_message, retrying
from ingest.tokens import TiktokenTokenizer

logger = logging.getLogger(__name__)

# Published output sizes; other models (compatible servers) are probed once with a one-word request.
KNOWN_DIMENSIONS: Final = MappingProxyType(
    {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
)
# OpenAI's per-input limit for every embedding model (8192 documented; 8191 is what the API enforces).
MAX_INPUT_TOKENS: Final = 8191








class OpenAIEmbedder:
    """Embeds with an OpenAI-compatible API; vectors are re-normalised because compatible servers may not.

    `max_retries` is the number of attempts in all, the first included (as in "tried 5 times").
    Waits are parameters so tests run in milliseconds.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        model: str = "text-embedding-3-small",
        dimension: int | None = None,
        max_batch_inputs: int = 256,
        max_batch_tokens: int = 250_000,
        max_retries: int = 5,
        retry_base_delay_s: float = 1.0,
        retry_max_delay_s: float = 30.0,
        timeout_s: float = 60.0,
    ) -> None:
        if max_batch_inputs < 1 or max_batch_tokens < 1:
            raise ValueError("max_batch_inputs and max_batch_tokens must be positive")
        self._model = model
        self._max_batch_inputs = min(max_batch_inputs, 2048)  # the API's own cap on inputs per request
        self._max_batch_tokens = max_batch_tokens
        self._attempts = max(1, max_retries)
        self._base_delay_s = retry_base_delay_s
        self._max_delay_s = retry_max_delay_s
        self._timeout_s = timeout_s
        # Only text-embedding-3 models accept `dimensions` (shortened vectors); others just report theirs.
        self._send_dimensions = dimension is not None and model.startswith("text-embedding-3")
        self._dimension = dimension if dimension is not None else KNOWN_DIMENSIONS.get(model)
        self._tokenizer = TiktokenTokenizer()
        # The client is cheap to build and does no I/O until the first request.
        self._client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s
        )

    @property
    def model_name(self) -> str:
        return self._model

    @property
    def dimension(self) -> int:
        """Output size; for a model outside KNOWN_DIMENSIONS call `await probe_dimension()` first."""
        if self._dimension is None:
            raise EmbeddingError(
                f"the dimension of embedding model {self._model} is not known yet: "
                "await probe_dimension() or pass dimension="
            )
        return self._dimension

    @property
    def max_input_tokens(self) -> int:
        return MAX_INPUT_TOKENS

    @property
    def tokenizer(self) -> TiktokenTokenizer:
        return self._tokenizer

    async def probe_dimension(self) -> int:
        """The model's output size: from the table or `dimension=`, else from one one-word request."""
        if self._dimension is None:
            await self._request(["dimension"])
        return self.dimension

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit vector per text, in order; requests are sent one batch at a time."""
        vectors: list[list[float]] = []
        for batch in self._batches([self._fit(text) for text in texts]):
            vectors.extend(await self._request(batch))
        return vectors

    async def aclose(self) -> None:
        await self._client.close()

    def _fit(self, text: str) -> tuple[str, int]:
        """The text as the API takes it (non-empty, within the input limit) and its token count."""
        if not text.strip():
            return " ", 1
        ids = self._tokenizer.encode(text)
        if len(ids) <= MAX_INPUT_TOKENS:
            return text, len(ids)
        logger.warning("embedding input of %d tokens cut to %d", len(ids), MAX_INPUT_TOKENS)
        return self._tokenizer.decode(ids[:MAX_INPUT_TOKENS]), MAX_INPUT_TOKENS

    def _batches(self, texts: list[tuple[str, int]]) -> list[list[str]]:
        """Consecutive runs of texts within both the input-count and the token budget."""
        batches: list[list[str]] = []
        current: list[str] = []
        tokens = 0
        for text, n in texts:
            if current and (len(current) >= self._max_batch_inputs or tokens + n > self._max_batch_tokens):
                batches.append(current)
                current, tokens = [], 0
            current.append(text)
            tokens += n
        if current:
            batches.append(current)
        return batches



    async def _request(self, batch: list[str]) -> list[list[float]]:
        """One embeddings call with retries; returns normalised vectors in input order."""
        dimensions = self._dimension if self._send_dimensions and self._dimension else openai.omit
        attempt = 0
        try:
            async for attempt_state in retrying(
                what="embedding request", attempts=self._attempts, base_delay_s=self._base_delay_s,
                max_delay_s=self._max_delay_s, timeout_s=self._timeout_s, log=logger,
            ):
                with attempt_state:
                    attempt = attempt_state.retry_state.attempt_number
                    response = await self._client.embeddings.create(
                        model=self._model, input=batch, dimensions=dimensions
                    )
        except openai.OpenAIError as err:
            message, status = failure_message(f"the embedding model {self._model}", err, attempts=attempt,
                                              timeout_s=self._timeout_s)
            raise EmbeddingError(message, status=status, attempts=attempt) from None
        items = sorted(response.data, key=lambda item: item.index)
        if len(items) != len(batch):
            raise EmbeddingError(f"embedding API returned {len(items)} vectors for {len(batch)} inputs")
        vectors = [normalise(item.embedding) for item in items]
        size = len(vectors[0])
        if self._dimension is None:
            self._dimension = size
        if any(len(v) != self._dimension for v in vectors):
            raise EmbeddingError(
                f"embedding model {self._model} returned {size} dimensions, expected {self._dimension}"
            )
        return vectors


def normalise(vector: Sequence[float]) -> list[float]:
    """The vector scaled to length 1, so cosine similarity is a dot product whatever the server sent."""
    norm = math.sqrt(math.fsum(x * x for x in vector))
    if norm == 0.0 or not math.isfinite(norm):
        raise EmbeddingError("embedding API returned a zero or non-finite vector")
    return [float(x) / norm for x in vector]
