"""Long documents under long_document_strategy "chunk": windows, offsets, parity, limits (real engine)."""

from __future__ import annotations

import random
import threading
from typing import Any

import httpx
import psutil
import pytest

from server.core.rerank_job import sigmoid
from server.rerank.prompt import PromptBuilder

from .conftest import MAX_MODEL_LEN, wait_until
from .helpers import QUERY, assert_close, assert_error, assert_still_serving

EMOJI_TEXT = "北京是中国的首都 🙂👍🏽 Пекин — столица Китая. عاصمة الصين هي بكين. naïve café 🇨🇳 "
ASCII_TEXT = "the river runs past the old mill where the city keeps its history "


def long_doc(text: str, tokens: int, tokenizer: Any) -> str:
    """`text` repeated until it is at least `tokens` tokens long."""
    per_copy = len(tokenizer.encode(text, add_special_tokens=False))
    return text * (tokens // per_copy + 1)


@pytest.fixture(scope="module")
def builder(qwen3_tokenizer: Any) -> PromptBuilder:
    return PromptBuilder(qwen3_tokenizer, MAX_MODEL_LEN)


# --- windows and offsets (no engine) ------------------------------------------------------------


@pytest.mark.parametrize("text", [ASCII_TEXT, EMOJI_TEXT], ids=["ascii", "multilingual-emoji"])
@pytest.mark.parametrize("max_tokens_per_doc", [None, 37])
def test_windows_cover_the_document_and_offsets_are_exact(builder, qwen3_tokenizer, text, max_tokens_per_doc):
    doc = long_doc(text, 4 * MAX_MODEL_LEN, qwen3_tokenizer)
    prompts = builder.build_chunked(QUERY, [doc], max_tokens_per_doc=max_tokens_per_doc, max_chunks=1000)
    [windows] = prompts.windows
    doc_ids = qwen3_tokenizer([" " + doc], add_special_tokens=False)["input_ids"][0]
    frame = builder._frame(QUERY, None, max_tokens_per_doc)
    start_ids, length = frame.start, frame.doc_budget
    overlap = length // 8
    assert len(windows) > 3 and len(prompts.token_ids) == len(windows)
    assert windows[0].first_token == 0 and windows[-1].end_token == len(doc_ids), "the whole document"
    for k, (window, ids) in enumerate(zip(windows, prompts.token_ids, strict=True)):
        # Each prompt is the card's head, the window's tokens and the suffix.
        assert ids == start_ids + doc_ids[window.first_token : window.end_token] + builder.suffix_ids
        assert window.end_token - window.first_token <= length and len(ids) <= MAX_MODEL_LEN
        # text[start:end] is exactly the window's tokens' text (the first window's tokens start
        # with the space the prompt puts before the document).
        decoded = qwen3_tokenizer.decode(
            doc_ids[window.first_token : window.end_token], clean_up_tokenization_spaces=False
        )
        assert decoded == (" " if k == 0 else "") + doc[window.start : window.end], k
        if k:
            shared = windows[k - 1].end_token - window.first_token
            # The stated overlap; a window edge that would split a character moves back to its start.
            assert shared == overlap if text == ASCII_TEXT else overlap <= shared <= overlap + 3
    assert "�" not in "".join(qwen3_tokenizer.decode(doc_ids[w.first_token : w.end_token]) for w in windows)


def test_a_document_that_fits_is_one_window_with_the_truncate_prompt(builder):
    docs = ["short one", "another short document"]
    chunked = builder.build_chunked(QUERY, docs)
    assert chunked.token_ids == builder.build(QUERY, docs).token_ids
    assert [len(w) for w in chunked.windows] == [1, 1] and chunked.truncated == [False, False]


def test_max_chunks_keeps_the_first_windows(builder, qwen3_tokenizer):
    doc = long_doc(ASCII_TEXT, 10 * MAX_MODEL_LEN, qwen3_tokenizer)
    [windows] = builder.build_chunked(QUERY, [doc], max_chunks=3).windows
    assert len(windows) == 3 and windows[0].first_token == 0
    assert builder.build_chunked(QUERY, [doc], max_chunks=3).truncated == [True]


# --- through the server (real engine) ------------------------------------------------------------


def rerank(client: httpx.Client, **body: Any) -> dict:
    response = client.post("/v1/rerank", json=body)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.engine
def test_chunk_parity_each_window_and_the_max(client, card, engine, engine_loop, builder, tokenizer):
    docs = [long_doc(EMOJI_TEXT, 3 * MAX_MODEL_LEN, tokenizer), "Beijing is the capital of China."]
    data = rerank(client, query=QUERY, documents=docs, long_document_strategy="chunk")
    results = {r["index"]: r for r in data["results"]}
    prompts = builder.build_chunked(QUERY, docs)
    # Each window's score from the real engine equals the card's code on that window's ids.
    engine_logits = engine_loop.run(engine.score(prompts.token_ids, "parity-windows")).logits
    engine_scores = [sigmoid(x) for x in engine_logits]  # the card's score: the probability of "yes"
    card_scores = card.scores_of_ids(prompts.token_ids)
    assert_close(engine_scores, card_scores, 1e-4)
    n = len(prompts.windows[0])
    long_scores = card_scores[:n]
    assert max(long_scores) - min(long_scores) > 1e-3, "windows must score differently for this test to mean anything"
    # The document's score is the best window's; the passage names that window.
    assert abs(results[0]["relevance_score"] - max(long_scores)) <= 1e-4
    best = long_scores.index(max(long_scores))
    window = prompts.windows[0][best]
    assert results[0]["passage"] == {"start": window.start, "end": window.end, "chunk": best, "chunks": n}
    assert "passage" not in results[1], "a document of one window carries no passage"
    assert abs(results[1]["relevance_score"] - card_scores[n]) <= 1e-4
    assert data["usage"]["prompt_tokens"] == prompts.num_tokens, "usage counts every window"


@pytest.mark.engine
def test_short_documents_score_the_same_under_both_strategies(client):
    docs = ["Beijing is the capital of China.", "Gravity is a force.", "北京是中国的首都。"]
    truncate = rerank(client, query=QUERY, documents=docs)
    chunk = rerank(client, query=QUERY, documents=docs, long_document_strategy="chunk")
    assert all("passage" not in r for r in truncate["results"] + chunk["results"])
    assert {r["index"]: r["relevance_score"] for r in truncate["results"]} == {
        r["index"]: r["relevance_score"] for r in chunk["results"]
    }
    assert truncate["usage"]["prompt_tokens"] == chunk["usage"]["prompt_tokens"]


@pytest.mark.engine
def test_truncate_is_the_default_and_unchanged(client, card, tokenizer):
    doc = long_doc(ASCII_TEXT, 3 * MAX_MODEL_LEN, tokenizer)
    data = rerank(client, query=QUERY, documents=[doc, "short"])
    assert all(set(r) == {"index", "relevance_score", "document"} for r in data["results"])
    got = {r["index"]: r["relevance_score"] for r in data["results"]}
    assert_close([got[0], got[1]], card.scores(QUERY, [doc, "short"]), 1e-4)


@pytest.mark.engine
def test_max_chunks_per_doc_alone_means_chunk(client, tokenizer):
    doc = long_doc(ASCII_TEXT, 6 * MAX_MODEL_LEN, tokenizer)
    [result] = rerank(client, query=QUERY, documents=[doc], max_chunks_per_doc=2)["results"]
    assert result["passage"]["chunks"] == 2
    [result] = rerank(client, query=QUERY, documents=[doc], max_chunks_per_doc=2, long_document_strategy="truncate")[
        "results"
    ]
    assert "passage" not in result


@pytest.mark.engine
def test_server_default_strategy_and_its_limits(live_server, tokenizer):
    live = live_server(long_document_strategy="chunk", max_chunks_per_doc=4, chunk_overlap_tokens=10)
    doc = long_doc(ASCII_TEXT, 10 * MAX_MODEL_LEN, tokenizer)
    with live.client() as c:
        [result] = rerank(c, query=QUERY, documents=[doc])["results"]
        assert result["passage"]["chunks"] == 4
        response = c.post("/v1/rerank", json={"query": QUERY, "documents": [doc], "max_chunks_per_doc": 5})
        assert_error(response, 422, "validation_error", "max_chunks_per_doc: at most 4 on this server, got 5")
        assert_still_serving(c)


BAD_CHUNK_BODIES = [
    ({"long_document_strategy": "summarize"}, "long_document_strategy"),
    ({"long_document_strategy": 1}, "long_document_strategy"),
    ({"max_chunks_per_doc": 0}, "max_chunks_per_doc"),
    ({"max_chunks_per_doc": -3}, "max_chunks_per_doc"),
    ({"max_chunks_per_doc": "2"}, "max_chunks_per_doc"),
]


@pytest.mark.engine
@pytest.mark.parametrize(("extra", "field"), BAD_CHUNK_BODIES)
def test_bad_chunk_fields_are_422_naming_the_field(client, extra, field):
    response = client.post("/v1/rerank", json={"query": QUERY, "documents": ["a"], **extra})
    assert_error(response, 422, "validation_error", field)
    assert_still_serving(client)


@pytest.mark.engine
def test_more_windows_than_the_engine_takes_is_413(live_server, tokenizer):
    live = live_server(max_documents=8, max_pairs_in_flight=10)
    doc = long_doc(ASCII_TEXT, 3 * MAX_MODEL_LEN, tokenizer)
    with live.client() as c:
        response = c.post(
            "/v1/rerank", json={"query": QUERY, "documents": [doc] * 4, "long_document_strategy": "chunk"}
        )
        assert_error(response, 413, "payload_too_large", r"split into \d+ windows, more pairs than the engine takes")
        assert_still_serving(c)
        series = 'rerank_rejected_requests_total{model="qwen3-reranker-test",reason="too_many_pairs"}'
        assert series in c.get("/metrics").text


@pytest.mark.engine
def test_huge_document_is_bounded_and_does_not_hold_up_a_short_request(server, engine, tokenizer):
    """~50x max_model_len tokens: at most --max-chunks-per-doc windows, no memory blow-up, and a
    short request sent while it is scored is answered before it (its windows after the first
    yield to other requests in the engine's priority queue)."""
    DOCS = 6  # enough windows that the engine has a backlog when the short request comes
    # Random words: no window repeats another, so none is served whole from the prefix cache.
    rng = random.Random(7)
    words = ASCII_TEXT.split() + "search ranking neural retrieval passage query capital mountain science".split()
    docs = [" ".join(rng.choices(words, k=50 * MAX_MODEL_LEN)) for _ in range(DOCS)]
    me = psutil.Process()
    rss_before = me.memory_info().rss
    finished: list[str] = []
    result: dict[str, httpx.Response] = {}

    def post(name: str, body: dict) -> None:
        with server.client() as c:
            result[name] = c.post("/v1/rerank", json=body, headers={"X-Request-Id": name})
        finished.append(name)

    long = threading.Thread(
        target=post, args=("long", {"query": QUERY, "documents": docs, "long_document_strategy": "chunk"})
    )
    long.start()
    # Once all the long request's windows are in the engine (its last one is, and that one is
    # scheduled last), send a short one.
    last_window = f"long-{DOCS * 64 - 1}"
    in_engine = engine.llm.output_processor.request_states
    assert wait_until(
        lambda: any(state.external_req_id == last_window for state in list(in_engine.values())), timeout=120
    ), "the windows never reached the engine"
    post("short", {"query": QUERY, "documents": ["Beijing is the capital of China."]})
    long.join(300)
    assert result["short"].status_code == 200 and result["long"].status_code == 200, result["long"].text
    assert finished == ["short", "long"], "the short request waited for the long document's windows"
    results = result["long"].json()["results"]
    assert [r["passage"]["chunks"] for r in results] == [64] * DOCS, "the default --max-chunks-per-doc bounds it"
    growth = me.memory_info().rss - rss_before
    assert growth < 200 * 1024 * 1024, f"the server's process grew by {growth / 2**20:.0f} MiB"
