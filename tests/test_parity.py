"""The server's scores equal the model card's code on the same random model (real vLLM engine)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from server.core.settings import Settings

from .conftest import MAX_MODEL_LEN, LiveServer, engine_settings, start_engine
from .helpers import DOCS, QUERY, assert_close, server_scores

CUSTOM_INSTRUCTION = "Given a question, retrieve passages in any language that answer it"


@pytest.mark.engine
@pytest.mark.parametrize("instruction", [None, CUSTOM_INSTRUCTION], ids=["default-instruction", "custom"])
def test_fp32_scores_equal_the_cards(client, card, instruction):
    extra = {"instruction": instruction} if instruction else {}
    got = server_scores(client, QUERY, DOCS, **extra)
    want = card.scores(QUERY, DOCS, instruction)
    assert_close(got, want, 1e-4)
    assert max(want) - min(want) > 0.05, "the random model must tell documents apart for this test to mean anything"


@pytest.mark.engine
def test_fp32_multilingual_query(client, card):
    query = "中国的首都是哪里？"
    docs = ["北京是中华人民共和国的首都。", "Paris est la capitale de la France.", "برلين عاصمة ألمانيا 🇩🇪"]
    assert_close(server_scores(client, query, docs), card.scores(query, docs), 1e-4)


@pytest.mark.engine
def test_fp32_document_longer_than_max_model_len(client, card):
    docs = ["Beijing " * 2000, "short document", "長い文書" * 900]
    response = client.post("/v1/rerank", json={"query": QUERY, "documents": docs})
    assert response.status_code == 200
    # Every prompt is cut to max_model_len, keeping prefix, query and suffix (the card truncates the same way).
    assert response.json()["usage"]["prompt_tokens"] <= 2 * MAX_MODEL_LEN + 200
    assert_close(server_scores(client, QUERY, docs), card.scores(QUERY, docs), 1e-4)


@pytest.mark.engine
def test_scores_do_not_depend_on_batch_company(client):
    """A document scores the same alone, in a batch, and after prefix-cache hits."""
    alone = [server_scores(client, QUERY, [doc])[0] for doc in DOCS[:5]]
    together = server_scores(client, QUERY, DOCS[:5])
    again = server_scores(client, QUERY, DOCS[:5])
    assert_close(together, alone, 1e-5)
    assert_close(again, alone, 1e-5)


@pytest.fixture(scope="module")
def bf16_server(engine_loop, engine, module_live_server, tiny_model) -> Iterator[LiveServer]:
    """A second engine in bfloat16 on the same model (started for this module only)."""
    settings = Settings(**engine_settings(tiny_model, dtype="bfloat16"))
    bf16_engine, stack = start_engine(engine_loop, settings)
    yield module_live_server(engine_override=bf16_engine)
    engine_loop.run(stack.aclose())


@pytest.mark.engine
def test_bf16_scores_within_1e_2_of_the_cards(bf16_server, card):
    with bf16_server.client() as client:
        got = server_scores(client, QUERY, DOCS)
    assert_close(got, card.scores(QUERY, DOCS), 1e-2)


@pytest.mark.engine
def test_another_dtype_never_hits_the_shared_score_cache(server, bf16_server, redis_server, live_server, engine):
    """fp32 and bf16 engines on one Redis: neither is served the other's scores."""
    fp32 = live_server(score_cache_size=1000, score_cache_url=redis_server.url)
    body = {"query": QUERY, "documents": [f"dtype check {d}" for d in DOCS]}
    with fp32.client() as client:
        assert client.post("/v1/rerank", json=body).status_code == 200
    bf16 = live_server(
        engine_override=bf16_server.service.engine, score_cache_size=1000, score_cache_url=redis_server.url
    )
    assert bf16.service.score_cache.identity.endswith(b"bfloat16")
    with bf16.client() as client:
        before = bf16.service.metrics.score_cache_misses._value.get()
        assert client.post("/v1/rerank", json=body).status_code == 200
        assert bf16.service.metrics.score_cache_misses._value.get() == before + len(DOCS)
