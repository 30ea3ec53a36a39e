"""Pure: every message askdocs shows in Slack, as `{"text": …, "blocks": […]}` keyword arguments.

Text from pages, the model and users passes through `mrkdwn.escape`/`from_markdown`; links are built only by
`mrkdwn.link`. Limits (docs.slack.dev, Block Kit reference): 3,000 characters per section text, 50 blocks a
message, 10 context elements; `msg_blocks_too_long` has been seen near 13k characters of blocks, so answer
text is capped well below that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bot.answering.citations import cited_numbers, remap_citations
from bot.answering.models import Turn
from bot.slack.mrkdwn import (
    escape,
    from_markdown,
    link,
    parse_scope,
    slack_to_plain,
    split_text,
    truncate,
    user_mention,
)

if TYPE_CHECKING:
    from bot.answering.models import Answer, Source

Block = dict[str, Any]
Message = dict[str, Any]  # chat.postMessage / chat.update keyword arguments: text + blocks

MAX_BLOCKS = 50
MAX_CONTEXT_ELEMENTS = 10
MAX_ANSWER_CHARS = 9000
MAX_FALLBACK_CHARS = 3000
MAX_TITLE_CHARS = 150
FEEDBACK_BLOCK_ID = "askdocs_feedback"
FEEDBACK_ACTION_ID = "feedback"
QUESTION_BLOCK_ID = "askdocs_question"
ANSWER_BLOCK_PREFIX = "askdocs_answer"
REPLY_BLOCK_ID = "askdocs_reply"  # placeholders, apologies: part of a Q&A thread, not of its history
# Answers link their sources: Slack would otherwise unfurl the first page link into a big preview.
NO_UNFURL: dict[str, Any] = {"unfurl_links": False, "unfurl_media": False}
MAX_STREAM_CHUNK_CHARS = 12_000  # chat.appendStream / chat.stopStream: markdown_text per call

SEARCHING = "Searching Confluence…"
WRITING = "Writing the answer…"
# Slack's native loading state (assistant.threads.setStatus): shown as "askdocs is searching Confluence…",
# cycling through the loading messages until the app replies in the thread.
STATUS = "is searching Confluence…"
LOADING_MESSAGES = ("Searching Confluence…", "Reading the best matching pages…", "Writing the answer…")
# Shown when a user opens askdocs' Messages tab (and in manifest.yml's agent_view: keep them alike).
SUGGESTED_PROMPTS_TITLE = "Ask me about anything in Confluence"
SUGGESTED_PROMPTS = (
    ("How do I get VPN access?", "How do I request VPN access?"),
    ("Where are the runbooks?", "Where are the on-call runbooks?"),
    ("Onboarding checklist", "What is on the onboarding checklist for new engineers?"),
    ("Ask in one space", "in:ENG how do we deploy to production?"),
)
USAGE = (
    "Ask me about anything in Confluence: `/askdocs how do I request VPN access?`\n"
    "Start with `in:ENG,OPS` to search only those spaces, e.g. `/askdocs in:ENG where are the runbooks?`"
)
FEEDBACK_THANKS = "Thanks for the feedback"
SYNC_REFUSED = "Sorry, only askdocs admins can run `/docsync`. Ask one of them if the wiki needs a refresh."
TRUNCATED_NOTE = "Your question was long, so I only read its first part."


def fresh_id(base: str, nonce: str) -> str:
    """`base.nonce`: Slack wants a new block_id for each message and each edit of it (Block Kit reference)."""
    return f"{base}.{nonce}" if nonce else base


def base_id(block_id: str) -> str:
    return block_id.partition(".")[0]


def suggested_prompts() -> list[dict[str, str]]:
    """assistant.threads.setSuggestedPrompts' `prompts`."""
    return [{"title": title, "message": message} for title, message in SUGGESTED_PROMPTS]


def section(text: str, *, block_id: str | None = None) -> Block:
    block: Block = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    if block_id:
        block["block_id"] = block_id
    return block


def context(*texts: str) -> Block:
    elements = [{"type": "mrkdwn", "text": t} for t in texts[:MAX_CONTEXT_ELEMENTS]]
    return {"type": "context", "elements": elements}


def sections(text: str, *, block_prefix: str | None = None, nonce: str = "") -> list[Block]:
    """One or more sections holding `text`, each within the 3,000-character limit."""
    return [section(piece, block_id=fresh_id(f"{block_prefix}_{i}", nonce) if block_prefix else None)
            for i, piece in enumerate(split_text(text) or ["…"])]


def fit(blocks: list[Block], *, keep_last: int = 0, max_blocks: int = MAX_BLOCKS) -> list[Block]:
    """At most `max_blocks` blocks; the last `keep_last` (sources, buttons) always survive."""
    if len(blocks) <= max_blocks:
        return blocks
    tail = blocks[len(blocks) - keep_last:] if keep_last else []
    head = blocks[: max_blocks - keep_last - 1]
    return [*head, context("_(cut: too long for one Slack message)_"), *tail]


# ---- answers ----------------------------------------------------------------------------------------


def searching(*, nonce: str = "") -> Message:
    """The placeholder, only where Slack's loading status can't be shown."""
    return {"text": SEARCHING,
            "blocks": [{**context(f":mag: {SEARCHING}"), "block_id": fresh_id(REPLY_BLOCK_ID, nonce)}]}


def streaming(partial_markdown: str, *, nonce: str = "") -> Message:
    """An answer being written, where Slack's native streaming isn't available: what the model has so far."""
    body = truncate(from_markdown(partial_markdown), MAX_ANSWER_CHARS) or "…"
    return {"text": truncate(body, MAX_FALLBACK_CHARS),
            "blocks": [*sections(body), {**context(f":writing_hand: {WRITING}"),
                                         "block_id": fresh_id(REPLY_BLOCK_ID, nonce)}]}


def stream_markdown(text: str) -> str:
    """Model or page text for chat.startStream/appendStream's markdown: it can't ping anyone (`escape`).

    Escaping is per character except `@here`-style words, so pieces cut at whitespace escape to pieces of
    the escaped whole: the stream is sent in such pieces (see `streamable`).
    """
    return escape(text)


def streamable(partial: str) -> str:
    """The part of a growing text that can be streamed now: up to its last whitespace, so no word (nor an
    `@here`, nor a citation) is cut in two."""
    cut = max(partial.rfind(" "), partial.rfind("\n"))
    return partial[: cut + 1] if cut >= 0 else ""


def renumber_citations(text: str) -> str:
    """`[3] … [1] … [3]` → `[1] … [2] … [1]`: numbered by first citation with the engine's own rules (code and
    subscripts left alone), so a streamed answer usually reads exactly as the final one (two chunks of one page,
    or an invalid number, still differ: corrected at the end)."""
    return remap_citations(text, {n: i for i, n in enumerate(cited_numbers(text), start=1)})


def stream_piece(partial: str) -> str:
    """The escaped, renumbered markdown of what can be streamed of a growing answer (see `streamable`)."""
    return stream_markdown(renumber_citations(streamable(partial)))


def answer_tail(result: Answer, *, nonce: str) -> list[Block]:
    """What ends a streamed answer at chat.stopStream: its numbered sources and the 👍/👎 buttons.

    The sources block carries the answer's block_id, so the thread's history reads the message as an answer.
    """
    tail: list[Block] = []
    if result.sources:
        tail.append({**context(*(source_line(s) for s in result.sources)),
                     "block_id": fresh_id(f"{ANSWER_BLOCK_PREFIX}_sources", nonce)})
    else:
        tail.append({**context("_No sources cited._"), "block_id": fresh_id(f"{ANSWER_BLOCK_PREFIX}_sources",
                                                                             nonce)})
    if result.query_id is not None:
        tail.append(feedback_buttons(result.query_id, nonce=nonce))
    return tail


def stream_continuation(result: Answer, streamed: str) -> str | None:
    """The markdown that completes a streamed answer at chat.stopStream, or None when the final answer
    doesn't continue what was streamed (citations renumbered, a refusal, quotes after a model failure) and
    the message must be replaced instead."""
    if result.refused or result.note or result.truncated:
        return None
    final = stream_markdown(result.text)
    if not final.startswith(streamed) or len(final) - len(streamed) > MAX_STREAM_CHUNK_CHARS:
        return None
    return final[len(streamed):]


def source_line(source: Source) -> str:
    title = source.title[:MAX_TITLE_CHARS] or source.url
    return f"[{source.n}] {link(source.url, title)}"


def answer(result: Answer, *, nonce: str = "") -> Message:
    """The final answer: text, numbered sources, 👍/👎 (or a refusal with the closest pages)."""
    top: list[Block] = []
    if result.note:
        top.append(context(f":warning: {escape(result.note)}"))
    if result.truncated:
        top.append(context(f":scissors: {TRUNCATED_NOTE}"))
    tail: list[Block] = []
    if result.refused:
        body = escape(result.text)
        closest = [f"• {link(s.url, s.title[:MAX_TITLE_CHARS] or s.url)}" for s in result.closest]
        if closest:
            body += "\n\nThe closest pages I found:\n" + "\n".join(closest)
    else:
        body = truncate(from_markdown(result.text), MAX_ANSWER_CHARS)
        if result.sources:
            tail.append(context(*(source_line(s) for s in result.sources)))
    if result.query_id is not None:
        tail.append(feedback_buttons(result.query_id, nonce=nonce))
    blocks = fit([*top, *sections(body, block_prefix=ANSWER_BLOCK_PREFIX, nonce=nonce), *tail],
                 keep_last=len(tail))
    return {"text": truncate(body, MAX_FALLBACK_CHARS), "blocks": blocks}


def feedback_buttons(query_id: int, *, nonce: str = "") -> Block:
    """Slack's standard 👍/👎: a feedback_buttons element in a context_actions block (docs.slack.dev)."""
    def button(vote: str, label: str) -> Block:
        return {"text": {"type": "plain_text", "text": label}, "value": f"{vote}:{query_id}",
                "accessibility_label": f"{'Helpful' if vote == 'up' else 'Not helpful'} answer"}

    return {"type": "context_actions", "block_id": fresh_id(FEEDBACK_BLOCK_ID, nonce),
            "elements": [{"type": "feedback_buttons", "action_id": FEEDBACK_ACTION_ID,
                          "positive_button": button("up", "👍"), "negative_button": button("down", "👎")}]}


def feedback_vote(action: Mapping[str, Any]) -> tuple[int, int]:
    """(query id, +1 or -1) of a feedback click: the feedback_buttons value `up:42`, or the buttons of
    answers posted before them (action_id feedback_up/feedback_down, value `42`)."""
    value = str(action.get("value"))
    vote, _, query_id = value.rpartition(":")
    if not vote:
        vote = "up" if action.get("action_id") == "feedback_up" else "down"
    return int(query_id), 1 if vote == "up" else -1


def asked(user_id: str, question: str, *, nonce: str = "") -> Message:
    """The visible question of `/askdocs` (its answer goes in this message's thread)."""
    text = truncate(f"{user_mention(user_id)} asked: {escape(question)}", MAX_FALLBACK_CHARS)
    return {"text": text, "blocks": [section(text, block_id=fresh_id(QUESTION_BLOCK_ID, nonce))]}


def asked_with_answer(user_id: str, question: str, result: Answer) -> Message:
    """Question and answer in one message, for the response_url fallback (the bot can't post here)."""
    head = asked(user_id, question)
    body = answer(result)
    return {"text": f"{head['text']}\n{body['text']}"[:MAX_FALLBACK_CHARS],
            "blocks": fit([*head["blocks"], *body["blocks"]], keep_last=1)}


def apology(ref: str, *, nonce: str = "") -> Message:
    text = f"Sorry, something went wrong while answering. Please try again in a minute (ref `{ref}`)."
    return {"text": text, "blocks": [section(f":warning: {text}", block_id=fresh_id(REPLY_BLOCK_ID, nonce))]}


def problem(message: str, *, nonce: str = "") -> Message:
    """A user-facing reason why a question can't be answered as asked."""
    text = escape(message)
    return {"text": text, "blocks": [section(text, block_id=fresh_id(REPLY_BLOCK_ID, nonce))]}


# ---- thread history: our own messages read back ------------------------------------------------------


def _ts_key(ts: str) -> tuple[int, int]:
    seconds, _, micros = ts.partition(".")
    return int(seconds or 0), int(micros.ljust(6, "0")[:6] or 0)


def thread_turns(
    messages: Sequence[Mapping[str, Any]], *, before_ts: str, bot_user_id: str | None, bot_id: str | None,
) -> tuple[list[Turn], bool]:
    """(the conversation before `before_ts` as turns, whether the bot asked or answered in the thread).

    Only askdocs' Q&A messages make a thread a conversation: replies under a /docsync report or an ops
    alert are people talking among themselves. Users' messages become user turns (mentions and `in:`
    prefixes stripped), the bot's answers assistant turns, the question of `/askdocs` a user turn;
    placeholders, apologies and other bots are left out.
    """
    turns: list[Turn] = []
    conversation = False
    limit = _ts_key(before_ts)
    for message in messages:
        ours = (bot_user_id is not None and message.get("user") == bot_user_id) or (
            bot_id is not None and message.get("bot_id") == bot_id)
        block_ids = {base_id(str(b.get("block_id", ""))) for b in message.get("blocks") or []} if ours else set()
        conversation = conversation or any(
            b in (QUESTION_BLOCK_ID, REPLY_BLOCK_ID) or b.startswith(ANSWER_BLOCK_PREFIX) for b in block_ids)
        if _ts_key(str(message.get("ts", "0"))) >= limit:
            continue
        if ours:
            text = str(message.get("text") or "")
            if QUESTION_BLOCK_ID in block_ids:
                turns.append(Turn("user", slack_to_plain(text.partition(" asked: ")[2])))
            elif any(b.startswith(ANSWER_BLOCK_PREFIX) for b in block_ids):
                turns.append(Turn("assistant", slack_to_plain(text)))
        elif not message.get("bot_id") and message.get("subtype") != "bot_message":
            _, question = parse_scope(slack_to_plain(str(message.get("text") or ""), bot_user_id=bot_user_id))
            if question:
                turns.append(Turn("user", question))
    return turns, conversation
