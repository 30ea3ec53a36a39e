"""The language model behind answers: the `ChatModel` role and `OpenAIChat` for any OpenAI-compatible API.

Failures before the first token are retried (nothing has reached the user yet); a failure after it is
reported, because retrying would repeat half an answer. Errors end in `ChatModelError` whose message a
user may read: short, honest, without keys or upstream response text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import openai
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from bot.answering.models import ChatMessage
from ingest.openai_errors import describe, failure_message, retrying

logger = logging.getLogger(__name__)

# Reasoning models (o1, o3, o4-mini, gpt-5…) reject `max_tokens` ("Unsupported parameter: 'max_tokens' is not
# supported with this model. Use 'max_completion_tokens' instead.") and any temperature but the default. Other
# models are found out by that error: one retry without the parameter (issue 16).
_REASONING_MODEL = re.compile(r"^(o\d|gpt-5)", re.IGNORECASE)
# Appended to an answer the model stopped at its token limit (finish_reason "length"), so readers know.
CUT_SHORT_NOTE = "(Cut short: the answer reached the language model's length limit.)"

class ChatModelError(Exception):
    """The model could not answer; `str()` is fit for a Slack thread (no key, no upstream body)."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.attempts = attempts


class ChatModel(Protocol):
    """Something that writes an answer from a prompt, as a stream of text deltas or all at once."""

    def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int = 700, temperature: float = 0.1
    ) -> AsyncIterator[str]:
        """Text deltas as they arrive; joined they are the whole answer."""
        ...

    async def complete(
        self, messages: Sequence[ChatMessage], *, max_tokens: int = 700, temperature: float = 0.1
    ) -> str:
        """The whole answer at once."""
        ...




class OpenAIChat:
    """Chat completions over `stream=True` from OpenAI or any compatible server (`base_url` ends in /v1).

    `max_retries` is the number of attempts in all, the first included ("tried 3 times"); waits grow from
    `retry_base_delay_s` with jitter and honour Retry-After up to `retry_max_delay_s`.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        model: str = "gpt-4o-mini",
        timeout_s: float = 60,
        max_retries: int = 3,
        retry_base_delay_s: float = 1.0,
        retry_max_delay_s: float = 20.0,
    ) -> None:
        self._model = model
        self._timeout_s = timeout_s
        self._attempts = max(1, max_retries)
        self._base_delay_s = retry_base_delay_s
        self._max_delay_s = retry_max_delay_s
        reasoning = bool(_REASONING_MODEL.match(model))
        self._token_param = "max_completion_tokens" if reasoning else "max_tokens"
        self._send_temperature = not reasoning
        # The client's own retries are off: the policy is ours (before the first token only) and testable.
        self._client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s
        )

    @property
    def model_name(self) -> str:
        return self._model

    async def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int = 700, temperature: float = 0.1
    ) -> AsyncIterator[str]:
        """Yield text deltas; retries happen only until the first delta has arrived."""
        chunks, first = await self._open(messages, max_tokens=max_tokens, temperature=temperature)
        try:
            if first:
                yield first
            cut_short = False
            async for chunk in chunks:
                for delta in deltas(chunk):
                    yield delta
                cut_short = cut_short or any(choice.finish_reason == "length" for choice in chunk.choices)
            if cut_short:
                yield "\n\n" + CUT_SHORT_NOTE
        except openai.OpenAIError as err:
            reason, status = describe(err, timeout_s=self._timeout_s)
            raise ChatModelError(f"the language model stopped mid-answer ({reason})", status=status) from None
        finally:
            await chunks.close()

    async def complete(
        self, messages: Sequence[ChatMessage], *, max_tokens: int = 700, temperature: float = 0.1
    ) -> str:
        """The streamed answer joined: same retry policy, one code path."""
        parts = [part async for part in self.stream(messages, max_tokens=max_tokens, temperature=temperature)]
        return "".join(parts)

    async def aclose(self) -> None:
        await self._client.close()

    async def _open(
        self, messages: Sequence[ChatMessage], *, max_tokens: int, temperature: float
    ) -> tuple[openai.AsyncStream[ChatCompletionChunk], str]:
        """Start a stream and read up to its first text, retrying failures on the way; return both."""
        payload = [to_param(m) for m in messages]
        attempt = 0
        while True:  # a parameter the model rejects is dropped once, then the request goes again
            try:
                async for attempt_state in retrying(
                    what=f"chat model {self._model}", attempts=self._attempts, base_delay_s=self._base_delay_s,
                    max_delay_s=self._max_delay_s, timeout_s=self._timeout_s, log=logger,
                ):
                    with attempt_state:
                        attempt = attempt_state.retry_state.attempt_number
                        chunks = await self._client.chat.completions.create(
                            model=self._model,
                            messages=payload,
                            stream=True,
                            **self._options(max_tokens=max_tokens, temperature=temperature),
                        )
                        try:
                            first = await first_text(chunks)
                        except BaseException:
                            await chunks.close()
                            raise
                        return chunks, first
            except openai.BadRequestError as err:
                if not self._adapt(err):
                    raise self._failure(err, attempt) from None
            except openai.OpenAIError as err:
                raise self._failure(err, attempt) from None

    def _options(self, *, max_tokens: int, temperature: float) -> dict[str, Any]:
        options: dict[str, Any] = {self._token_param: max_tokens}
        if self._send_temperature:
            options["temperature"] = temperature
        return options

    def _adapt(self, err: openai.BadRequestError) -> bool:
        """Stop sending a parameter this model rejects; False when there is nothing (more) to drop."""
        said = str(err.message)
        if self._token_param == "max_tokens" and (err.param == "max_tokens" or "max_completion_tokens" in said):
            logger.info("chat model %s wants max_completion_tokens instead of max_tokens", self._model)
            self._token_param = "max_completion_tokens"
            return True
        if self._send_temperature and err.param == "temperature":
            logger.info("chat model %s accepts only its default temperature", self._model)
            self._send_temperature = False
            return True
        return False

    def _failure(self, err: openai.OpenAIError, attempts: int) -> ChatModelError:
        message, status = failure_message("the language model", err, attempts=attempts, timeout_s=self._timeout_s)
        return ChatModelError(message, status=status, attempts=attempts)





def to_param(message: ChatMessage) -> ChatCompletionMessageParam:
    """The wire form of one message (one branch per role: the client types each role separately)."""
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "assistant":
        return {"role": "assistant", "content": message.content}
    return {"role": "user", "content": message.content}


async def first_text(chunks: openai.AsyncStream[ChatCompletionChunk]) -> str:
    """Read until a chunk carries text ("" if the stream ends without any); role-only chunks are skipped."""
    async for chunk in chunks:
        text = "".join(deltas(chunk))
        if text:
            return text
    return ""


def deltas(chunk: ChatCompletionChunk) -> list[str]:
    """The text pieces of one chunk (usage-only chunks have no choices)."""
    return [choice.delta.content for choice in chunk.choices if choice.delta and choice.delta.content]



