"""Document tokenization at a sixth of the CPU: the Qwen3 tokenizer's own BPE run by tiktoken.

Tokenizing the documents was most of the API process's CPU per document (about 0.5 ms for a
400-token document with Hugging Face `tokenizers`, 0.08 ms with tiktoken; docs/performance.md).
Qwen's vocabulary is a tiktoken-style byte-level BPE: every merge makes the next token id, so
tiktoken's "merge the lowest-ranked pair" is the same algorithm as the HF tokenizer's merge list.
`FastEncoder.from_tokenizer` builds the tiktoken encoding from the HF tokenizer's own
`tokenizer.json` (vocabulary, split regex, added tokens) and returns None, leaving the HF tokenizer
in charge, unless the tokenizer has exactly that shape.

What tiktoken does not do is the NFC normalizer: a text that NFC would change goes to the HF
tokenizer. `tests/test_fast_tokenizer.py` checks the result against the HF tokenizer for every
Unicode code point in several contexts, the prompt test's documents, and random text.
tiktoken is a dependency of this package (and of vLLM).
"""

from __future__ import annotations

import contextlib
import json
import logging
import unicodedata
import weakref
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger("server.fast_tokenizer")
_ENCODERS: weakref.WeakKeyDictionary[Any, FastEncoder | None] = weakref.WeakKeyDictionary()


class FastEncoder:
    """Token ids of texts, as `tokenizer(texts, add_special_tokens=False)["input_ids"]` gives them."""

    def __init__(self, encoding: Any, tokenizer: Any, normalize_nfc: bool) -> None:
        self._encoding = encoding
        self._tokenizer = tokenizer  # the HF tokenizer, for texts NFC would change
        self._normalize_nfc = normalize_nfc

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> FastEncoder | None:
        """A FastEncoder equal to `tokenizer`, or None if its tokenizer.json is not the byte-level
        BPE shape this is proven for (then the HF tokenizer encodes everything). Made once per
        tokenizer object (a second), however many services start on it (tests start many)."""
        try:
            return _ENCODERS[tokenizer]
        except (KeyError, TypeError):
            pass
        encoder = cls._make(tokenizer)
        with contextlib.suppress(TypeError):  # an object without weak references is not cached
            _ENCODERS[tokenizer] = encoder
        return encoder

    @classmethod
    def _make(cls, tokenizer: Any) -> FastEncoder | None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or getattr(tokenizer, "split_special_tokens", False):
            return None
        spec = json.loads(backend.to_str())
        shape = _bpe_shape(spec)
        if shape is None:
            logger.info("documents tokenized by the Hugging Face tokenizer (not a plain byte-level BPE for tiktoken)")
            return None
        pattern, ranks, normalize_nfc = shape
        import tiktoken

        special = {token["content"]: token["id"] for token in spec["added_tokens"]}
        encoding = tiktoken.Encoding("rerank-fast-bpe", pat_str=pattern, mergeable_ranks=ranks, special_tokens=special)
        return cls(encoding, tokenizer, normalize_nfc)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        out: list[list[int] | None] = []
        slow: list[int] = []
        for i, text in enumerate(texts):
            if self._normalize_nfc and not unicodedata.is_normalized("NFC", text):
                out.append(None)
                slow.append(i)
            else:
                out.append(self._encoding.encode(text, allowed_special="all"))
        if slow:
            encoded = self._tokenizer([texts[i] for i in slow], add_special_tokens=False)["input_ids"]
            for i, ids in zip(slow, encoded, strict=True):
                out[i] = ids
        return out  # type: ignore[return-value]


def _bpe_shape(spec: dict[str, Any]) -> tuple[str, dict[bytes, int], bool] | None:
    """(split regex, token bytes -> id, NFC?) for a byte-level BPE tokenizer.json whose merges
    make tokens in id order (Qwen2/Qwen3); None for any other tokenizer."""
    normalizer = spec.get("normalizer")
    if normalizer not in (None, {"type": "NFC"}):
        return None
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    if not steps or len(steps) != 2:
        return None
    split, byte_level = steps
    if (
        split.get("type") != "Split"
        or "Regex" not in (split.get("pattern") or {})
        or split.get("behavior") != "Isolated"
        or split.get("invert")
        or byte_level.get("type") != "ByteLevel"
        or byte_level.get("add_prefix_space")
        or byte_level.get("use_regex")
    ):
        return None
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or model.get("dropout") or model.get("byte_fallback") or model.get("ignore_merges"):
        return None
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        return None
    for token in spec.get("added_tokens", []):
        if token.get("lstrip") or token.get("rstrip") or token.get("single_word") or token.get("normalized"):
            return None
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    to_byte = {char: byte for byte, char in bytes_to_unicode().items()}
    vocab: dict[str, int] = model["vocab"]
    try:
        ranks = {bytes(to_byte[c] for c in token): rank for token, rank in vocab.items()}
    except KeyError:  # a token that is not byte-level text
        return None
    if len(ranks) != len(vocab) or any(bytes([b]) not in ranks for b in range(256)):
        return None
    last = max(ranks[bytes([b])] for b in range(256))
    for merge in model.get("merges", []):
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        rank = vocab.get(left + right)
        if rank is None or rank <= last:  # merges must make tokens in increasing id order
            return None
        last = rank
    return split["pattern"]["Regex"], ranks, normalizer is not None
