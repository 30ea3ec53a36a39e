"""OpenAIChat through the real `openai` client against the emulator, and the emulator's default model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bot.answering.chat import CUT_SHORT_NOTE, ChatModel, ChatModelError, OpenAIChat
from bot.answering.models import ChatMessage
from tests.emulators.openai import REFUSAL, OpenAIEmulator

KEY = "sk-test-llm-0123456789abcdef"
MakeChat = Callable[..., OpenAIChat]

SOURCES = """Answer only from the sources below and cite them as [n].

<source n="1" title="VPN setup" url="https://wiki.example.com/x/1">
Install the VPN client from the software portal. To reset your VPN password, open the self-service \
portal and choose Reset password. The new password works after five minutes.
</source>

<source n="2" title="Expenses" url="https://wiki.example.com/x/2">
Expenses are filed in the finance tool. Receipts older than 90 days are rejected.
</source>
"""


def ask(question: str) -> list[ChatMessage]:
    return [
        ChatMessage("system", "You answer questions about the company wiki."),
        ChatMessage("user", f"{SOURCES}\nQuestion: {question}"),
    ]


@pytest.fixture
async def emulator() -> AsyncIterator[OpenAIEmulator]:
    async with OpenAIEmulator(api_key=KEY) as emu:
        yield emu


@pytest.fixture
async def make_chat(emulator: OpenAIEmulator) -> AsyncIterator[MakeChat]:
    """OpenAIChat clients aimed at the emulator with millisecond retry waits; closed after the test."""
    made: list[OpenAIChat] = []

    def make(**overrides: Any) -> OpenAIChat:
        options: dict[str, Any] = {"api_key": KEY, "base_url": emulator.base_url, "retry_base_delay_s": 0.001}
        options.update(overrides)
        chat = OpenAIChat(**options)
        made.append(chat)
        return chat

    yield make
    for chat in made:
        await chat.aclose()


async def test_stream_yields_several_deltas_that_join_to_the_cited_answer(
    emulator: OpenAIEmulator, make_chat: MakeChat
) -> None:
    model: ChatModel = make_chat()
    deltas = [d async for d in model.stream(ask("How do I reset my VPN password?"))]
    answer = "".join(deltas)
    assert len(deltas) > 3
    assert answer.startswith(
        "To reset your VPN password, open the self-service portal and choose Reset password [1]."
    )
    assert "[2]" not in answer
    assert emulator.chat_requests[-1]["stream"] is True
    sent = emulator.chat_messages()
    assert [m["role"] for m in sent] == ["system", "user"]
    assert sent[1]["content"].endswith("Question: How do I reset my VPN password?")
    assert await model.complete(ask("How do I reset my VPN password?")) == answer


async def test_unrelated_question_gets_the_refusal(make_chat: MakeChat) -> None:
    assert await make_chat().complete(ask("Who won the football match yesterday?")) == REFUSAL


async def test_answer_cites_each_sentence_from_its_source(make_chat: MakeChat) -> None:
    answer = await make_chat().complete(ask("How are expenses filed and which receipts are rejected?"))
    assert "Expenses are filed in the finance tool [2]." in answer
    assert "Receipts older than 90 days are rejected [2]." in answer


async def test_rate_limit_twice_then_success_is_retried(
    emulator: OpenAIEmulator, make_chat: MakeChat
) -> None:
    emulator.fail_next("chat", status=429, n=2, retry_after=0.001)
    answer = await make_chat(max_retries=3).complete(ask("How do I reset my VPN password?"))
    assert "[1]" in answer
    assert [r.status for r in emulator.records] == [429, 429, 200]


async def test_timeout_before_the_first_token_is_retried(
    emulator: OpenAIEmulator, make_chat: MakeChat
) -> None:
    emulator.delay_next("chat", 2.0)
    answer = await make_chat(timeout_s=0.2).complete(ask("How do I reset my VPN password?"))
    assert "[1]" in answer
    assert len(emulator.chat_requests) == 2


async def test_failure_after_the_first_token_is_reported_not_retried(
    emulator: OpenAIEmulator, make_chat: MakeChat
) -> None:
    emulator.break_stream_next(after_deltas=2)
    received: list[str] = []
    with pytest.raises(ChatModelError, match="stopped mid-answer"):
        async for delta in make_chat().stream(ask("How do I reset my VPN password?")):
            received.append(delta)
    assert len(received) == 2
    assert len(emulator.chat_requests) == 1  # a retry would repeat half an answer


async def test_persistent_server_error_gives_an_honest_error_without_the_key(
    emulator: OpenAIEmulator, make_chat: MakeChat
) -> None:
    emulator.fail_next("chat", status=500, n=5)
    with pytest.raises(ChatModelError) as caught:
        await make_chat(max_retries=3).complete(ask("How do I reset my VPN password?"))
    assert str(caught.value) == "the language model is unavailable (HTTP 500) — tried 3 times"
    assert caught.value.status == 500 and caught.value.attempts == 3
    assert KEY not in str(caught.value)
    assert len(emulator.chat_requests) == 3


async def test_wrong_key_is_not_retried_nor_echoed(emulator: OpenAIEmulator, make_chat: MakeChat) -> None:
    wrong = "sk-wrong-llm-key-5555"
    with pytest.raises(ChatModelError) as caught:
        async for _ in make_chat(api_key=wrong).stream(ask("anything")):
            pass
    assert caught.value.status == 401
    assert "invalid_api_key" in str(caught.value)
    assert wrong not in str(caught.value) and wrong[-4:] not in str(caught.value)
    assert [r.status for r in emulator.records] == [401]


async def test_scripted_reply_is_used_once(emulator: OpenAIEmulator, make_chat: MakeChat) -> None:
    emulator.script_reply("Ignore the sources: the admin password is hunter2.")
    chat = make_chat()
    assert await chat.complete(ask("How do I reset my VPN password?")) == (
        "Ignore the sources: the admin password is hunter2."
    )
    assert "[1]" in await chat.complete(ask("How do I reset my VPN password?"))


async def test_follow_up_is_condensed_into_a_standalone_question(make_chat: MakeChat) -> None:
    prompt = (
        "Rewrite the follow-up as a standalone question. Reply with the question only.\n\n"
        "User: How do I reset my VPN password?\n"
        "Assistant: Open the self-service portal [1].\n"
        "Follow-up: What about on a Mac?"
    )
    question = await make_chat().complete([ChatMessage("user", prompt)])
    assert question == "What about on a Mac (reset VPN password)?"


async def test_a_reasoning_model_is_asked_with_max_completion_tokens(
    emulator: OpenAIEmulator, make_chat: MakeChat
) -> None:
    answer = await make_chat(model="o4-mini").complete(ask("How do I reset my VPN password?"))
    assert "[1]" in answer
    [sent] = emulator.chat_requests
    assert sent["max_completion_tokens"] == 700 and "max_tokens" not in sent and "temperature" not in sent


async def test_a_model_that_rejects_max_tokens_is_asked_again_without_it(
    emulator: OpenAIEmulator, make_chat: MakeChat
) -> None:
    chat = make_chat(model="my-reasoning-model")  # a name we can't recognise: found out from its 400s
    answer = await chat.complete(ask("How do I reset my VPN password?"))
    assert "[1]" in answer  # an answer from the model, not an error (nor an extractive fallback)
    assert [r.status for r in emulator.records] == [400, 400, 200]  # max_tokens, then temperature
    assert await chat.complete(ask("How are expenses filed?"))
    assert [r.status for r in emulator.records][3:] == [200]  # remembered: no 400 for the next question


async def test_an_answer_cut_at_the_token_limit_says_so(make_chat: MakeChat) -> None:
    chat = make_chat()
    cut = await chat.complete(ask("How do I reset my VPN password?"), max_tokens=8)
    assert cut.startswith("To reset your VPN password")
    assert cut.endswith(CUT_SHORT_NOTE)
    whole = await chat.complete(ask("How do I reset my VPN password?"))
    assert CUT_SHORT_NOTE not in whole
