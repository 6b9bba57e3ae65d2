"""The server's prompt token ids equal the model card's, document by document (no engine)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from server.rerank.prompt import PREFIX as SERVER_PREFIX
from server.rerank.prompt import SUFFIX as SERVER_SUFFIX
from server.rerank.prompt import PromptBuilder, QueryTooLongError

from .conftest import ROOT
from .helpers import DOCS, MAX_LEN, card_ids
from .reference import PREFIX, SUFFIX


def test_prompt_text_is_the_cards():
    assert SERVER_PREFIX == PREFIX
    assert SERVER_SUFFIX == SUFFIX


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(ROOT / "tests" / "fixtures" / "qwen3-tokenizer")


def test_suffix_ends_with_the_double_newline_token(tok):
    builder = PromptBuilder(tok, MAX_LEN)
    assert builder.suffix_ids[-1] == 271  # "\n\n", not 198 ("\n"): the Jinja trailing-newline trap
    assert tok.convert_tokens_to_ids("yes") == 9693 and tok.convert_tokens_to_ids("no") == 2152


@pytest.mark.parametrize("instruction", [None, "Retrieve passages written in Chinese that answer the question"])
@pytest.mark.parametrize("query", ["What is the capital of China?", "首都是哪里？", "x"])
def test_token_ids_equal_the_cards(tok, query, instruction):
    builder = PromptBuilder(tok, MAX_LEN)
    prompts = builder.build(query, DOCS, instruction)
    assert prompts.token_ids == card_ids(tok, query, DOCS, instruction)
    assert all(len(ids) <= MAX_LEN for ids in prompts.token_ids)
    assert prompts.truncated[DOCS.index("x " * 1000)]
    assert not prompts.truncated[0]


def test_long_document_keeps_prefix_query_and_suffix(tok):
    builder = PromptBuilder(tok, MAX_LEN)
    [ids] = builder.build("my query", ["word " * 5000]).token_ids
    assert len(ids) == MAX_LEN
    assert ids[: len(builder.prefix_ids)] == builder.prefix_ids
    assert ids[-len(builder.suffix_ids) :] == builder.suffix_ids
    head = builder.head_ids("my query", None)
    assert ids[len(builder.prefix_ids) : len(builder.prefix_ids) + len(head)] == head


def test_max_tokens_per_doc_caps_the_document(tok):
    builder = PromptBuilder(tok, MAX_LEN)
    full = builder.build("q", ["one two three four five six"]).token_ids[0]
    capped = builder.build("q", ["one two three four five six"], max_tokens_per_doc=2)
    assert len(full) - len(capped.token_ids[0]) == 4  # six word tokens, two kept
    assert capped.truncated == [True]


def test_query_too_long_for_any_document(tok):
    builder = PromptBuilder(tok, MAX_LEN)
    with pytest.raises(QueryTooLongError, match="no room for a document"):
        builder.build("word " * MAX_LEN, ["doc"])


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    query=st.text(min_size=1, max_size=40),
    docs=st.lists(st.text(max_size=120), min_size=1, max_size=4),
)
def test_token_ids_equal_the_cards_on_random_text(tok, query, docs):
    builder = PromptBuilder(tok, MAX_LEN)
    try:
        prompts = builder.build(query, docs)
    except QueryTooLongError:
        return
    expected = card_ids(tok, query, docs)
    for ids, exp, truncated in zip(prompts.token_ids, expected, prompts.truncated, strict=True):
        if not truncated:  # a document that fits: same ids, always
            assert ids == exp
