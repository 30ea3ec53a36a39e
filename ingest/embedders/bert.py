"""A BERT sentence encoder in plain torch: the forward pass of sentence-transformers' BERT models, mean-pooled.

Why not sentence-transformers itself: importing it (and transformers) costs ~200 MB of resident memory on
top of torch's ~220 MB, for a 6-layer model that is ~60 lines of arithmetic. Loaded this way,
all-MiniLM-L6-v2 computes the same vectors (cosine ≥ 0.99999 against sentence-transformers, checked in
tests/test_embedders.py) and `askdocs run` with the local model stays under 600 MB. Weights come from the
model folder's `model.safetensors`, the vocabulary from its `tokenizer.json` (the `tokenizers` library).

Only what these models use is implemented: absolute positions, post-layer-norm BERT, GELU, mean pooling
and L2 normalisation. `is_supported` says whether a model folder is one of them; other models go through
sentence-transformers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer


@dataclass(frozen=True)
class BertConfig:
    hidden_size: int
    num_layers: int
    num_heads: int
    layer_norm_eps: float
    max_seq_length: int

    @classmethod
    def read(cls, folder: Path) -> BertConfig:
        config = _read_json(folder / "config.json")
        sentence = _read_json(folder / "sentence_bert_config.json")
        return cls(
            hidden_size=int(config["hidden_size"]), num_layers=int(config["num_hidden_layers"]),
            num_heads=int(config["num_attention_heads"]), layer_norm_eps=float(config["layer_norm_eps"]),
            max_seq_length=int(sentence.get("max_seq_length", 256)),
        )


def is_supported(folder: Path) -> bool:
    """A sentence-transformers folder holding a plain BERT with mean pooling and normalisation."""
    config = _read_json(folder / "config.json")
    pooling = _read_json(folder / "1_Pooling" / "config.json")
    modules = [m.get("type", "") for m in _read_json_list(folder / "modules.json")]
    return (
        config.get("model_type") == "bert"
        and config.get("hidden_act") == "gelu"
        and config.get("position_embedding_type", "absolute") == "absolute"
        and (folder / "model.safetensors").is_file()
        and (folder / "tokenizer.json").is_file()
        and pooling.get("pooling_mode_mean_tokens") is True
        and not any(pooling.get(k) for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens",
                                             "pooling_mode_mean_sqrt_len_tokens"))
        and modules[-1:] == ["sentence_transformers.models.Normalize"]
    )


class BertEncoder:
    """Texts → unit vectors. Not thread-safe on its own: LocalEmbedder runs one encode at a time."""

    def __init__(self, folder: Path) -> None:
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        self.config = BertConfig.read(folder)
        self._torch = torch
        self._weights: dict[str, torch.Tensor] = {
            name.removeprefix("bert."): tensor for name, tensor in load_file(str(folder / "model.safetensors")).items()
        }
        tokenizer: Tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.enable_truncation(self.config.max_seq_length)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._tokenizer = tokenizer

    @property
    def dimension(self) -> int:
        return self.config.hidden_size

    @property
    def max_seq_length(self) -> int:
        return self.config.max_seq_length

    def encode(self, texts: list[str]) -> list[list[float]]:
        torch = self._torch
        encodings = self._tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
        with torch.inference_mode():
            hidden = self._forward(ids, mask)
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
            unit = torch.nn.functional.normalize(pooled, p=2, dim=1)
        vectors: list[list[float]] = unit.tolist()
        return vectors

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        torch, w, c = self._torch, self._weights, self.config
        functional = torch.nn.functional
        positions = torch.arange(ids.shape[1]).unsqueeze(0)
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][positions]
             + w["embeddings.token_type_embeddings.weight"][torch.zeros_like(ids)])
        x = self._layer_norm(x, "embeddings.LayerNorm")
        # Padding positions get -inf-like scores so attention ignores them.
        bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        head_size = c.hidden_size // c.num_heads
        for n in range(c.num_layers):
            p = f"encoder.layer.{n}."

            q, k, v = (
                functional.linear(x, w[f"{p}attention.self.{name}.weight"], w[f"{p}attention.self.{name}.bias"])
                .view(x.shape[0], x.shape[1], c.num_heads, head_size).transpose(1, 2)
                for name in ("query", "key", "value")
            )
            context = functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            context = context.transpose(1, 2).reshape(x.shape)
            attended = functional.linear(context, w[p + "attention.output.dense.weight"],
                                         w[p + "attention.output.dense.bias"])
            x = self._layer_norm(attended + x, p + "attention.output.LayerNorm")
            inner = functional.gelu(functional.linear(x, w[p + "intermediate.dense.weight"],
                                                      w[p + "intermediate.dense.bias"]))
            out = functional.linear(inner, w[p + "output.dense.weight"], w[p + "output.dense.bias"])
            x = self._layer_norm(out + x, p + "output.LayerNorm")
        return x

    def _layer_norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return self._torch.nn.functional.layer_norm(
            x, (self.config.hidden_size,), self._weights[name + ".weight"], self._weights[name + ".bias"],
            self.config.layer_norm_eps,
        )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_json_list(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return []
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []
