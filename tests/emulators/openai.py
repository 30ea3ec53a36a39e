"""An OpenAI-compatible server for tests: `/v1/embeddings`, `/v1/chat/completions`, `/v1/models`.

Driven by the real `openai` client (`AsyncOpenAI(base_url=await emulator.start())`). It speaks the wire
format (base64 or float embeddings, SSE chat chunks ending in `data: [DONE]`, OpenAI's error body), holds
state tests can read and records every request.

Embeddings are a signed hashed bag of lower-cased word stems (stopwords dropped) plus bigrams, L2
normalised: texts sharing words are close, unrelated texts near orthogonal, so retrieval tests mean
something without a real model.

The default chat "model" is extractive and deterministic. It reads this prompt format (the answer
engine's, see bot/prompts.py):

    <source n="1" title="VPN setup" url="https://wiki/x/1">
    To reset your VPN password, open the self-service portal.
    </source>
    ...
    Question: How do I reset my VPN password?

Source blocks may sit in any message; attribute order is free, only `n` is required. The question is the
text after the last `Question:` line outside the sources (or the next non-empty line when that is empty);
without one, the last user message less its sources. It answers with the 1–3 source sentences sharing the
most non-stopword stems with the question, each cited `[n]` before its final punctuation; when no source
sentence shares such a word it answers exactly `I couldn't find that in Confluence.`

Search passages: a prompt containing `It is only used to search the wiki` gets the question back as a
statement (this model knows nothing beyond its prompt, so it can't write a better passage).

Condensing: a prompt containing `Rewrite the follow-up as a standalone question` gets a standalone
question back. Turns are read from lines `User: …` / `Assistant: …` and the follow-up from a last
`Follow-up: …` (or `Question: …`) line; without those, the user-role messages are the turns. The reply is
the follow-up followed by the previous user turn's key words in parentheses, e.g.
`What about on a Mac (reset VPN password)?`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import math
import re
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final

from aiohttp import web

REFUSAL: Final = "I couldn't find that in Confluence."
CONDENSE_MARKER: Final = "rewrite the follow-up as a standalone question"
SEARCH_MARKER: Final = "it is only used to search the wiki"
CHAT_MODELS: Final = ("gpt-4o-mini", "gpt-4o", "o4-mini", "gpt-5-mini")
# Like OpenAI's reasoning models: `max_tokens` and a non-default temperature are rejected with a 400.
REASONING_MODELS: Final = frozenset({"o4-mini", "gpt-5-mini", "my-reasoning-model"})
EMBEDDING_MODELS: Final = ("text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002")
MAX_INPUTS: Final = 2048  # OpenAI's cap on inputs per embeddings request
STOPWORDS: Final = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing done down during each else few for from further get
    gets got had has have having he her here hers him his how i if in into is it its itself just let me
    more most my myself no nor not now of off on once only or other our ours out over own please same she
    should so some such tell than that the their theirs them then there these they this those through to
    too under until up us very was we were what when where which while who whom why will with would you
    your yours yourself""".split()
)
_ENDPOINTS: Final = {
    "embeddings": "embeddings",
    "chat": "chat",
    "chat/completions": "chat",
    "chat.completions": "chat",
    "models": "models",
}
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SOURCE = re.compile(r"<source\b([^>]*)>(.*?)</source>", re.DOTALL | re.IGNORECASE)
_ATTR = re.compile(r'(\w+)\s*=\s*"([^"]*)"')
_TURN = re.compile(
    r"^\s*(user|assistant|follow-up(?: question)?|question)\s*:\s*(.*)$", re.IGNORECASE | re.MULTILINE
)


# ---- text features (pure) -------------------------------------------------------------------------


def stem(word: str) -> str:
    """A crude suffix stripper: enough for reset/resetting, policy/policies, step/steps to meet."""
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if len(word) > 5 and word.endswith("ing"):
        word = word[:-3]
    elif len(word) > 4 and word.endswith("ed"):
        word = word[:-2]
    if len(word) > 4 and word.endswith("e"):
        word = word[:-1]
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
        word = word[:-1]
    return word


def content_stems(text: str) -> list[str]:
    """Stems of the non-stopword words of `text`, in order."""
    words = (w.split("'")[0] for w in _WORD.findall(text.lower()))
    return [stem(w) for w in words if w and w not in STOPWORDS]


def count_tokens(text: str) -> int:
    """A rough token count (words and punctuation marks) for `usage`; not tiktoken's."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def embed_text(text: str, dimension: int) -> list[float]:
    """Signed feature hashing of stems (weight 1) and stem bigrams (0.5) into unit vectors of `dimension`.

    Signed hashing keeps collisions from adding up: unrelated texts stay near orthogonal.
    """
    stems = content_stems(text)
    features = [(s, 1.0) for s in stems] + [(f"{a} {b}", 0.5) for a, b in itertools.pairwise(stems)]
    vector = [0.0] * dimension
    for feature, weight in features:
        _add_hashed(vector, feature, weight)
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0:  # no content words (or they cancelled): still a valid, text-specific unit vector
        vector = [0.0] * dimension
        _add_hashed(vector, "\x00" + text, 1.0)
        norm = 1.0
    return [x / norm for x in vector]


def _add_hashed(vector: list[float], feature: str, weight: float) -> None:
    digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
    sign = 1.0 if digest >> 63 else -1.0
    vector[digest % len(vector)] += sign * weight


# ---- the default chat model (pure) ----------------------------------------------------------------


def message_text(message: dict[str, Any]) -> str:
    """A message's text whether `content` is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def default_reply(messages: list[dict[str, Any]]) -> str:
    """What the emulator's deterministic model says to `messages` (see the module docstring)."""
    texts = [message_text(m) for m in messages]
    if any(CONDENSE_MARKER in t.lower() for t in texts):
        return condense(messages)
    if any(SEARCH_MARKER in " ".join(t.lower().split()) for t in texts):
        # Knowing nothing beyond the prompt, this "model" states the question as an answer would open.
        return f"{find_question(texts) or _last_user_text(messages)}".rstrip("?") + "."
    return answer(messages)


def answer(messages: list[dict[str, Any]]) -> str:
    """Extract the source sentences that best overlap the question, each with its [n] citation."""
    texts = [message_text(m) for m in messages]
    sources: list[tuple[str, str]] = []
    for text in texts:
        for attrs, body in _SOURCE.findall(text):
            n = dict(_ATTR.findall(attrs)).get("n")
            if n is not None:
                sources.append((n, body))
    question = find_question(texts) or _last_user_text(messages)
    wanted = set(content_stems(question))
    scored: list[tuple[int, int, str, str]] = []
    for n, body in sources:
        for sentence in re.split(r"(?<=[.!?])\s+|\n+", body):
            sentence = sentence.strip()
            overlap = len(wanted & set(content_stems(sentence)))
            if sentence and overlap:
                scored.append((-overlap, len(scored), sentence, n))
    if not scored:
        return REFUSAL
    best = sorted(scored)[:3]
    return " ".join(cite(sentence, n) for _, _, sentence, n in best)


def cite(sentence: str, n: str) -> str:
    """`Open the portal [1].`: the citation goes before the closing punctuation."""
    match = re.search(r"[.!?]+$", sentence)
    if match is None:
        return f"{sentence} [{n}]."
    return f"{sentence[: match.start()]} [{n}]{match.group()}"


def find_question(texts: list[str]) -> str:
    """The text after the last `Question:` line outside source blocks ("" when there is none)."""
    found = ""
    for text in texts:
        lines = _SOURCE.sub("", text).splitlines()
        for i, line in enumerate(lines):
            stripped = line.strip()
            if stripped.lower().startswith("question:"):
                rest = stripped[len("question:") :].strip()
                following = [ln.strip() for ln in lines[i + 1 :] if ln.strip()]
                found = rest or (following[0] if following else "")
    return found


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _SOURCE.sub("", message_text(message)).strip()
    return ""


def condense(messages: list[dict[str, Any]]) -> str:
    """The follow-up made standalone: follow-up text plus the previous user turn's key words."""
    turns: list[tuple[str, str]] = []
    for message in messages:
        for role, text in _TURN.findall(message_text(message)):
            turns.append((role.lower(), text.strip()))
    user_turns = [text for role, text in turns if role == "user"]
    follow_ups = [text for role, text in turns if role != "user" and role != "assistant"]
    if not turns:
        user_turns = [
            message_text(m).strip()
            for m in messages
            if m.get("role") == "user" and CONDENSE_MARKER not in message_text(m).lower()
        ]
    if follow_ups:
        follow_up, previous = follow_ups[-1], user_turns[-1] if user_turns else ""
    elif user_turns:
        follow_up, previous = user_turns[-1], user_turns[-2] if len(user_turns) > 1 else ""
    else:
        return ""
    have = set(content_stems(follow_up))
    keys: list[str] = []
    for word in re.findall(r"[A-Za-z0-9][\w-]*", previous):
        s = stem(word.lower())
        if len(word) > 2 and word.lower() not in STOPWORDS and s not in have:
            have.add(s)
            keys.append(word)
    if not keys:
        return follow_up
    return f"{follow_up.rstrip(' ?.!')} ({' '.join(keys[:6])})?"


# ---- the server -----------------------------------------------------------------------------------


class TextLog(list[str]):
    """A list of texts that may also be called (`emulator.embedded_texts()`) for a copy."""

    def __call__(self) -> list[str]:
        return list(self)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the emulator saw it: endpoint key, HTTP status answered, JSON body (if any)."""

    endpoint: str
    status: int
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Fault:
    status: int
    retry_after: float | None


class OpenAIEmulator:
    """OpenAI on 127.0.0.1:<ephemeral port>; `await start()` returns the base URL ending in /v1."""

    def __init__(self, *, api_key: str = "sk-test", embedding_dimension: int = 384) -> None:
        self.api_key = api_key
        self.embedding_dimension = embedding_dimension
        self.embedded_texts = TextLog()  # every text embedded successfully, in order
        self.embedding_requests = 0  # authenticated POST /v1/embeddings, injected failures included
        self.embedding_tokens = 0  # sum of usage.prompt_tokens answered
        self.chat_requests: list[dict[str, Any]] = []  # JSON body of every authenticated chat call
        self.records: list[RecordedRequest] = []  # every request to any endpoint
        self._faults: dict[str, deque[Fault]] = {}
        self._delays: dict[str, deque[float]] = {}
        self._scripted: deque[str] = deque()
        self._stream_breaks: deque[int] = deque()
        self.stream_delta_interval_s = 0.0  # a model that writes for a while: the pause between deltas
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._base_url: str | None = None

    # -- test controls ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the OpenAI emulator is not started")
        return self._base_url

    def fail_next(
        self, endpoint: str, *, status: int = 429, n: int = 1, retry_after: float | None = None
    ) -> None:
        """Answer the next `n` requests to `endpoint` ("embeddings", "chat", "models") with `status`."""
        queue = self._faults.setdefault(endpoint_key(endpoint), deque())
        queue.extend(Fault(status, retry_after) for _ in range(n))

    def delay_next(self, endpoint: str, seconds: float) -> None:
        """Hold the next request to `endpoint` for `seconds` before answering (client timeouts)."""
        self._delays.setdefault(endpoint_key(endpoint), deque()).append(seconds)

    def script_reply(self, text: str) -> None:
        """Queue a canned reply for the next chat call instead of the default model's."""
        self._scripted.append(text)

    def break_stream_next(self, *, after_deltas: int = 1) -> None:
        """End the next streamed chat with an error event after `after_deltas` text deltas."""
        self._stream_breaks.append(after_deltas)

    def chat_messages(self, index: int = -1) -> list[dict[str, Any]]:
        """The `messages` of one recorded chat request (the last by default)."""
        messages: list[dict[str, Any]] = self.chat_requests[index]["messages"]
        return messages

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._closing.clear()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self._base_url = f"http://{host}:{port}/v1"
        return self._base_url

    async def stop(self) -> None:
        self._closing.set()  # wakes delayed handlers so shutdown doesn't wait out their delays
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._base_url = None

    async def __aenter__(self) -> OpenAIEmulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- handlers -----------------------------------------------------------------------------------

    async def _gate(self, request: web.Request, endpoint: str, body: dict[str, Any]) -> web.Response | None:
        """Auth, then injected delay and fault; a response here ends the request."""
        if request.headers.get("Authorization", "") != f"Bearer {self.api_key}":
            presented = request.headers.get("Authorization", "").removeprefix("Bearer ")
            masked = f"{presented[:3]}***{presented[-2:]}" if len(presented) > 8 else "***"
            self.records.append(RecordedRequest(endpoint, 401, body))
            return error_response(
                401,
                f"Incorrect API key provided: {masked}.",
                type_="invalid_request_error",
                code="invalid_api_key",
            )
        delays = self._delays.get(endpoint)
        if delays:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=delays.popleft())
            if request.transport is None or request.transport.is_closing():
                # The client timed out meanwhile: it never sees this one, so it embeds or answers nothing.
                self.records.append(RecordedRequest(endpoint, 499, body))
                return web.Response(status=499)
        faults = self._faults.get(endpoint)
        if faults:
            fault = faults.popleft()
            self.records.append(RecordedRequest(endpoint, fault.status, body))
            response = fault_response(fault.status)
            if fault.retry_after is not None:
                response.headers["Retry-After"] = f"{fault.retry_after:g}"
            return response
        return None

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        if request.headers.get("Authorization") == f"Bearer {self.api_key}":
            self.embedding_requests += 1
        if (gated := await self._gate(request, "embeddings", body)) is not None:
            return gated
        raw = body.get("input")
        texts = inputs_as_texts(raw)
        model = str(body.get("model", ""))
        problem = None
        if texts is None or not texts:
            problem = "'$.input' is invalid. Please check the API reference."
        elif len(texts) > MAX_INPUTS:
            problem = f"'$.input' is too long: at most {MAX_INPUTS} inputs per request."
        elif any(t == "" for t in texts):
            problem = "'$.input' is invalid: inputs must not be empty strings."
        dimension = body.get("dimensions", self.embedding_dimension)
        if not isinstance(dimension, int) or dimension < 1:
            problem = "'dimensions' must be a positive integer."
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            problem = "'encoding_format' must be 'float' or 'base64'."
        if problem is not None or texts is None or not isinstance(dimension, int):
            self.records.append(RecordedRequest("embeddings", 400, body))
            return error_response(400, problem or "invalid request", type_="invalid_request_error")
        tokens = sum(count_tokens(t) for t in texts)
        data = []
        for index, text in enumerate(texts):
            vector = embed_text(text, dimension)
            encoded: Any = vector
            if encoding == "base64":
                encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        self.embedded_texts.extend(texts)
        self.embedding_tokens += tokens
        self.records.append(RecordedRequest("embeddings", 200, body))
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        if request.headers.get("Authorization") == f"Bearer {self.api_key}":
            self.chat_requests.append(body)
        if (gated := await self._gate(request, "chat", body)) is not None:
            return gated
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            self.records.append(RecordedRequest("chat", 400, body))
            return error_response(400, "'messages' must be a non-empty array.", type_="invalid_request_error")
        model = str(body.get("model", CHAT_MODELS[0]))
        if (rejected := reasoning_model_rejection(model, body)) is not None:
            self.records.append(RecordedRequest("chat", 400, body))
            return rejected
        self.records.append(RecordedRequest("chat", 200, body))
        reply = self._scripted.popleft() if self._scripted else default_reply(messages)
        reply, finish_reason = cut_to_limit(reply, body.get("max_completion_tokens") or body.get("max_tokens"))
        completion_id = f"chatcmpl-emu{len(self.chat_requests)}"
        created = int(time.time())
        prompt_tokens = sum(count_tokens(message_text(m)) for m in messages if isinstance(m, dict))
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": count_tokens(reply),
            "total_tokens": prompt_tokens + count_tokens(reply),
        }
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply, "refusal": None},
                            "logprobs": None,
                            "finish_reason": finish_reason,
                        }
                    ],
                    "usage": usage,
                }
            )
        sse_headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        response = web.StreamResponse(headers=sse_headers)
        await response.prepare(request)

        def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }

        events = [chunk({"role": "assistant", "content": ""}, None)]
        events += [chunk({"content": piece}, None) for piece in split_deltas(reply)]
        events.append(chunk({}, finish_reason))
        if self._stream_breaks:  # an overloaded upstream: OpenAI sends an error object inside the stream
            cut = 1 + self._stream_breaks.popleft()
            message = "The server had an error while processing your request."
            error = {"message": message, "type": "server_error", "param": None, "code": None}
            events = [*events[:cut], {"error": error}]
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            events.append({**chunk({}, None), "choices": [], "usage": usage})
        try:
            for event in events:
                await response.write(f"data: {json.dumps(event)}\n\n".encode())
                if self.stream_delta_interval_s:
                    await asyncio.sleep(self.stream_delta_interval_s)
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionError:  # the client gave up (timeout) while we were delayed
            pass
        return response

    async def _models(self, request: web.Request) -> web.StreamResponse:
        if (gated := await self._gate(request, "models", {})) is not None:
            return gated
        self.records.append(RecordedRequest("models", 200))
        created = int(time.time())
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": created, "owned_by": "askdocs-emulator"}
                    for name in (*CHAT_MODELS, *EMBEDDING_MODELS)
                ],
            }
        )


def endpoint_key(endpoint: str) -> str:
    """"embeddings", "/v1/embeddings", "chat", "chat/completions"… → the emulator's endpoint key."""
    key = endpoint.strip().strip("/").removeprefix("v1/")
    if key not in _ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}: use one of {sorted(set(_ENDPOINTS.values()))}")
    return _ENDPOINTS[key]


def inputs_as_texts(raw: object) -> list[str] | None:
    """`input` as a list of texts: a string, strings, or token arrays (shown as their numbers)."""
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
        return [" ".join(str(x) for x in raw)]
    if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        return [str(x) for x in raw]
    if isinstance(raw, list) and all(isinstance(x, list) for x in raw):
        return [" ".join(str(t) for t in x) for x in raw]
    return None


def split_deltas(text: str, words_per_delta: int = 3) -> list[str]:
    """The reply cut into small pieces of a few words, as a streaming model sends them."""
    words = re.findall(r"\S+\s*", text)
    return ["".join(words[i : i + words_per_delta]) for i in range(0, len(words), words_per_delta)] or [text]


async def json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def error_response(
    status: int, message: str, *, type_: str, code: str | None = None, param: str | None = None
) -> web.Response:
    """OpenAI's error body: {"error": {"message", "type", "param", "code"}}."""
    return web.json_response(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}, status=status
    )


def reasoning_model_rejection(model: str, body: dict[str, Any]) -> web.Response | None:
    """OpenAI's 400s for parameters a reasoning model doesn't take (their wording)."""
    if model not in REASONING_MODELS:
        return None
    if "max_tokens" in body:
        return error_response(
            400, "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            type_="invalid_request_error", code="unsupported_parameter", param="max_tokens",
        )
    if body.get("temperature", 1) != 1:
        return error_response(
            400, f"Unsupported value: 'temperature' does not support {body['temperature']} with this model. "
            "Only the default (1) value is supported.",
            type_="invalid_request_error", code="unsupported_value", param="temperature",
        )
    return None


def cut_to_limit(reply: str, limit: object) -> tuple[str, str]:
    """The reply cut after `limit` tokens (count_tokens' measure) and its finish_reason."""
    if not isinstance(limit, int) or count_tokens(reply) <= limit:
        return reply, "stop"
    words = reply.split(" ")
    kept: list[str] = []
    for word in words:
        if count_tokens(" ".join([*kept, word])) > limit:
            break
        kept.append(word)
    return " ".join(kept), "length"


def fault_response(status: int) -> web.Response:
    if status == 429:
        return error_response(
            429,
            "Rate limit reached for requests. Please try again later.",
            type_="requests",
            code="rate_limit_exceeded",
        )
    if status >= 500:
        message = "The server had an error while processing your request. Sorry about that!"
        return error_response(status, message, type_="server_error")
    return error_response(status, f"Injected failure (HTTP {status}).", type_="invalid_request_error")
