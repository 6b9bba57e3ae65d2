"""tiktoken's encoding of documents equals the Qwen3 HF tokenizer's, everywhere (no engine)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from server.rerank.fast_tokenizer import FastEncoder
from server.rerank.prompt import PromptBuilder

from .conftest import ROOT
from .helpers import DOCS, card_ids


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(ROOT / "tests" / "fixtures" / "qwen3-tokenizer")


@pytest.fixture(scope="module")
def fast(tok):
    encoder = FastEncoder.from_tokenizer(tok)
    assert encoder is not None, "the Qwen3 tokenizer must get the fast encoder"
    return encoder


def hf_ids(tok, texts):
    return tok(list(texts), add_special_tokens=False)["input_ids"]


@pytest.mark.slow
def test_every_code_point_in_context(tok, fast):
    """Each of Unicode's 1.1M code points among letters, digits, spaces, newlines, a contraction
    and itself: the split regex's classes (letter, number, space, other) and its case-insensitive
    contractions agree between tiktoken's regex engine and the HF tokenizer's."""
    code_points = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]  # JSON rejects lone surrogates
    checked = 0
    for start in range(0, len(code_points), 50_000):
        texts = [
            f"a{ch}b {ch}1'{ch} {ch}{ch}\n\r{ch}  {ch}.'s{ch}" for ch in map(chr, code_points[start : start + 50_000])
        ]
        assert fast.encode_batch(texts) == hf_ids(tok, texts)
        checked += len(texts)
    assert checked == 1_112_064


def test_documents_of_the_prompt_test(tok, fast):
    texts = [" " + d for d in DOCS] + DOCS
    assert fast.encode_batch(texts) == hf_ids(tok, texts)


def test_text_that_nfc_changes_goes_to_the_hf_tokenizer(tok, fast):
    texts = [" e\u0301", "A\u030a and \u212b", "<|im_end|>\u0338", "\u1100\u1161\u11a8"]
    assert not any(unicodedata.is_normalized("NFC", t) for t in texts)
    assert fast.encode_batch(texts) == hf_ids(tok, texts)


def test_special_tokens_inside_documents_are_matched_as_the_hf_tokenizer_does(tok, fast):
    texts = [" <|im_end|>", "x<|im_start|>system", "<think>a</think>", "<|endoftext|><|endoftext|>", "<|im_end"]
    assert fast.encode_batch(texts) == hf_ids(tok, texts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=80), min_size=1, max_size=4))
def test_random_text(tok, fast, texts):
    assert fast.encode_batch(texts) == hf_ids(tok, texts)


def test_prompts_with_the_fast_encoder_equal_the_cards(tok):
    builder = PromptBuilder(tok, 512)
    assert builder.fast is not None
    assert builder.build("What is the capital of China?", DOCS).token_ids == card_ids(
        tok, "What is the capital of China?", DOCS
    )


def test_other_tokenizers_keep_the_hf_tokenizer(tok):
    class NotHF:
        pass

    assert FastEncoder.from_tokenizer(NotHF()) is None
    assert PromptBuilder(tok, 512, fast=False).fast is None
