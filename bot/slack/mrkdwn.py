"""Pure text handling at the Slack edge: Markdown → safe mrkdwn, Slack text → plain questions.

Everything that reaches Slack from a page or the model goes through `escape` or `from_markdown`, so it can
never ping anyone: `&`, `<`, `>` are escaped (which defuses `<!channel>`, `<!here>`, `<!subteam^…>` and
`<@U…>` tokens) and the bare words `@channel`/`@here`/`@everyone` get a zero-width joiner after the `@`.
Only `link()` builds `<url|text>` tokens. Source: docs.slack.dev "Formatting text for app surfaces".
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

ZWJ = "\u200d"
SECTION_TEXT_LIMIT = 3000  # Block Kit: a section's text is at most 3,000 characters

_BROADCAST = re.compile(r"(?<![\w.])@(channel|here|everyone)\b", re.IGNORECASE)
_SAFE_SCHEMES = ("http", "https", "mailto")
_TOKEN = re.compile("\ue000(\\d+)\ue001")
_FENCE = re.compile(r"```")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(.*)$")
_QUOTE = re.compile(r"^\s{0,3}>\s?(.*)$")
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_MD_LINK = re.compile(r"(!?)\[([^\]\n]*)\]\(\s*<?([^\s)>]+)>?(?:\s+\"[^\"\n]*\")?\s*\)")
_AUTOLINK = re.compile(r"<((?:https?|mailto):[^\s<>]+)>")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__")
_ITALIC = re.compile(r"(?<![*\w])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![*\w])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_BOLD_MARK = "\ue002"
_PROTECTED = re.compile(r"<[^<>\n]*>|&[a-z]+;")

# Slack's own tokens in text users typed (docs.slack.dev "Formatting text": retrieving messages).
_SLACK_LINK = re.compile(r"<((?:https?|mailto):[^|>]+)(?:\|([^>]*))?>")
_SLACK_CHANNEL = re.compile(r"<#([A-Z0-9]+)(?:\|([^>]*))?>")
_SLACK_USER = re.compile(r"<@([A-Z0-9]+)(?:\|([^>]*))?>")
_SLACK_SPECIAL = re.compile(r"<!([a-z]+)(?:\^[^|>]*)?(?:\|([^>]*))?>")
_SCOPE = re.compile(r"^\s*in:([A-Za-z0-9_~.-]+(?:,[A-Za-z0-9_~.-]+)*)(?=\s|$)", re.IGNORECASE)
_USER_ID = re.compile(r"^[UW][A-Z0-9]{1,20}$")


def defuse_broadcasts(text: str) -> str:
    """`@here` → `@\u200dhere`: reads the same, notifies no one."""
    return _BROADCAST.sub(lambda m: f"@{ZWJ}{m.group(1)}", text)


def escape(text: str) -> str:
    """Untrusted text → mrkdwn that shows the same words and can't ping or link."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return defuse_broadcasts(escaped)


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def user_mention(user_id: str) -> str:
    """`<@U123>` for a Slack user id we received from Slack; anything else is shown escaped."""
    return f"<@{user_id}>" if _USER_ID.match(user_id) else escape(user_id)


def link(url: str, text: str | None = None) -> str:
    """`<url|text>` with both parts made safe; a non-web URL is shown as text only.

    The label is escaped, its `|` replaced (Slack ends the URL at the first `|`) and newlines flattened;
    the URL gets `&` as `&amp;` and `|`, `<`, `>`, spaces percent-encoded so the token can't end early.
    """
    label = " ".join((text if text is not None else url).split()) or url
    label = escape(label).replace("|", "∣")
    url = url.strip()
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        scheme = ""
    if scheme not in _SAFE_SCHEMES:
        return label
    safe_url = (url.replace("&", "&amp;").replace("|", "%7C").replace("<", "%3C").replace(">", "%3E")
                .replace(" ", "%20").replace("\n", ""))
    return f"<{safe_url}|{label}>"


def from_markdown(markdown: str) -> str:
    """The model's Markdown → Slack mrkdwn, escaped: bold, links, headings, lists, quotes; code kept.

    An unclosed fence (a streaming answer) runs to the end of the text.
    """
    text = markdown.replace("\r\n", "\n").translate({0xE000: None, 0xE001: None, 0xE002: None})
    pieces = _FENCE.split(text)
    out: list[str] = []
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            out.append(_convert_prose(piece))
        else:
            # Code keeps its characters (no ZWJ, no formatting); only &, <, > must be escaped.
            code = piece.split("\n", 1)[1] if "\n" in piece and _looks_like_lang(piece) else piece
            code = _escape_code(code)
            out.append(f"```{code}```" if i < len(pieces) - 1 else f"```{code}")
    return "".join(out).strip()


def _escape_code(code: str) -> str:
    return code.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _looks_like_lang(piece: str) -> bool:
    first = piece.split("\n", 1)[0]
    return bool(re.fullmatch(r"[A-Za-z0-9_+#.-]*", first.strip()))


def _convert_prose(text: str) -> str:
    lines = []
    for line in text.split("\n"):
        if m := _HEADING.match(line):
            title = m.group(1).replace("**", "").replace("__", "")
            lines.append(f"*{_inline(title)}*" if title else "")
        elif _RULE.match(line):
            lines.append("───")
        elif m := _BULLET.match(line):
            depth = len(m.group(1).replace("\t", "  ")) // 2
            lines.append(f"{'    ' * depth}• {_inline(m.group(2))}")
        elif m := _QUOTE.match(line):
            lines.append(f">{_inline(m.group(1))}")
        else:
            lines.append(_inline(line))
    return "\n".join(lines)


def _inline(text: str) -> str:
    tokens: list[str] = []

    def keep(value: str) -> str:
        tokens.append(value)
        return f"\ue000{len(tokens) - 1}\ue001"

    def code(match: re.Match[str]) -> str:
        return keep(f"`{_escape_code(match.group(1))}`")

    def md_link(match: re.Match[str]) -> str:
        label = match.group(2) or match.group(3)
        return keep(link(match.group(3), label))

    text = _INLINE_CODE.sub(code, text)
    text = _MD_LINK.sub(md_link, text)
    text = _AUTOLINK.sub(lambda m: keep(link(m.group(1))), text)
    text = escape(text)
    text = _BOLD.sub(lambda m: f"{_BOLD_MARK}{m.group(1) or m.group(2)}{_BOLD_MARK}", text)
    text = _ITALIC.sub(lambda m: f"_{m.group(1)}_", text)
    text = _STRIKE.sub(lambda m: f"~{m.group(1)}~", text)
    text = text.replace(_BOLD_MARK, "*")
    return _TOKEN.sub(lambda m: tokens[int(m.group(1))], text)


def split_text(text: str, limit: int = SECTION_TEXT_LIMIT) -> list[str]:
    """Cut mrkdwn into pieces of at most `limit` characters for separate sections.

    Cuts at a paragraph, else a line, else a space; never inside a `<…>` token or an `&…;` entity; a code
    fence open at a cut is closed there and reopened in the next piece.
    """
    if limit < 16:
        raise ValueError("limit too small")
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        cut = _cut_point(rest, limit - 4)
        head, rest = rest[:cut].rstrip(), rest[cut:].lstrip()
        if head.count("```") % 2 == 1:
            head, rest = head + "\n```", "```\n" + rest
        if head.strip():
            pieces.append(head)
    if rest.strip():
        pieces.append(rest)
    return pieces


def _cut_point(text: str, limit: int) -> int:
    window = text[:limit]
    cut = -1
    for separator, minimum in (("\n\n", limit // 2), ("\n", limit // 3), (" ", limit // 4)):
        at = window.rfind(separator)
        if at >= minimum:
            cut = at
            break
    if cut <= 0:
        cut = limit
    for span in _PROTECTED.finditer(text, 0, min(len(text), limit + 1000)):
        if span.start() < cut < span.end() and span.start() > 0:
            return span.start()
    return cut


def truncate(text: str, limit: int, *, marker: str = " …") -> str:
    """At most `limit` characters, cut where `split_text` would cut."""
    if len(text) <= limit:
        return text
    return split_text(text, limit - len(marker))[0] + marker


def slack_to_plain(text: str, *, bot_user_id: str | None = None) -> str:
    """A message as Slack delivers it → the plain question: our mention dropped, tokens to words."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", " ", text)
    text = _SLACK_LINK.sub(lambda m: m.group(2) or m.group(1), text)
    text = _SLACK_CHANNEL.sub(lambda m: f"#{m.group(2) or m.group(1)}", text)
    text = _SLACK_USER.sub(lambda m: f"@{m.group(2) or m.group(1)}", text)
    text = _SLACK_SPECIAL.sub(lambda m: m.group(2) or f"@{m.group(1)}", text)
    return " ".join(unescape(text).split())


def parse_scope(question: str) -> tuple[list[str] | None, str]:
    """`in:ENG,OPS how do I…` → (["ENG", "OPS"], "how do I…"); no prefix → (None, question).

    Keys are upper-cased (Confluence space keys are), except personal spaces (`~user`).
    """
    match = _SCOPE.match(question)
    if match is None:
        return None, question.strip()
    keys: dict[str, None] = {}
    for key in match.group(1).split(","):
        keys.setdefault(key if key.startswith("~") else key.upper(), None)
    return list(keys), question[match.end():].strip()
