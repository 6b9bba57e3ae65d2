"""The score cache on the real engine, and its shared tier on a real redis-server.

A counting wrapper around the session's engine tells how many pairs reached it; every score it
returns is the real engine's.
"""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.core.settings import Settings

from .conftest import wait_until
from .fake_engine import EngineWrapper

pytestmark = pytest.mark.engine

QUERY = "Which river runs through the old town?"
LONG = " ".join(f"The river passes bridge number {i} on its way through the old town." for i in range(120))


def docs(tag: str, n: int = 4) -> list[str]:
    """Documents no other test sends (so nothing of them is cached yet)."""
    return [f"{tag}: the river runs past house {i} and the mill." for i in range(n)]


def counted_server(live_server, engine, **overrides):
    """A live server on the counted engine, with the score cache at the server's default size."""
    counter = EngineWrapper(engine)  # the real engine, counting the pairs it is given
    overrides.setdefault("score_cache_size", Settings.model_fields["score_cache_size"].default)
    live = live_server(engine_override=counter, **overrides)
    counter.pairs = 0  # the warm-up's
    return live, counter


def rerank(live, body: dict) -> dict:
    with live.client() as c:
        response = c.post("/v1/rerank", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def scores(data: dict) -> dict[int, float]:
    return {r["index"]: r["relevance_score"] for r in data["results"]}


def metric(live, name: str) -> float:
    with live.client() as c:
        text = c.get("/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def test_an_exact_repeat_hits_every_pair_with_bit_identical_scores(live_server, engine):
    live, counter = counted_server(live_server, engine)
    body = {"query": QUERY, "documents": docs("repeat")}
    first = rerank(live, body)
    assert counter.pairs == 4
    hits = metric(live, "rerank_score_cache_hits_total")
    second = rerank(live, body)
    assert counter.pairs == 4, "the repeat reached the engine"
    assert scores(second) == scores(first)  # bit-identical
    assert [r["index"] for r in second["results"]] == [r["index"] for r in first["results"]]
    assert metric(live, "rerank_score_cache_hits_total") == hits + 4
    assert metric(live, "rerank_score_cache_misses_total") == 4
    assert metric(live, "rerank_score_cache_entries") >= 4
    usage = second["usage"]
    assert usage["prompt_tokens"] == first["usage"]["prompt_tokens"]  # what the request is, hits or not
    assert usage["score_cache_hits"] == 4 and first["usage"]["score_cache_hits"] == 0
    assert usage["cached_tokens"] == 0  # vLLM's prefix cache alone: the engine scored nothing
    # the prefix-cache ratio counts the engine's tokens only: the repeat's hits do not raise it
    assert (
        metric(live, "rerank_engine_prompt_tokens_total")
        == metric(live, "rerank_prompt_tokens_total") - usage["prompt_tokens"]
    )


def test_what_changes_the_prompt_misses_and_what_does_not_hits(live_server, engine):
    live, counter = counted_server(live_server, engine)
    texts = [*docs("prompt", 2), LONG]
    rerank(live, {"query": QUERY, "documents": texts})
    assert counter.pairs == 3
    rerank(live, {"query": QUERY, "documents": texts, "instruction": "Find the river's name"})
    assert counter.pairs == 6, "another instruction is another prompt"
    rerank(live, {"query": QUERY, "documents": texts, "max_tokens_per_doc": 64})
    assert counter.pairs == 7, "only the long document's prompt changes when it is cut at 64 tokens"
    rerank(live, {"query": QUERY, "documents": texts, "max_tokens_per_doc": 100_000})
    assert counter.pairs == 7, "a limit past every document's length leaves the prompts as they were"
    before = counter.pairs
    chunked = rerank(live, {"query": QUERY, "documents": texts, "long_document_strategy": "chunk"})
    windows = chunked["results"][[r["index"] for r in chunked["results"]].index(2)]["passage"]["chunks"]
    assert windows > 1 and counter.pairs == before + windows - 1, "the first window is the truncated prompt"


def test_a_chunked_repeat_keeps_score_and_passage(live_server, engine):
    live, counter = counted_server(live_server, engine)
    body = {"query": QUERY, "documents": [LONG + " chunked", "short"], "long_document_strategy": "chunk"}
    first = rerank(live, body)
    pairs = counter.pairs
    second = rerank(live, body)
    assert counter.pairs == pairs
    assert second["results"] == first["results"]


def test_concurrent_identical_requests_reach_the_engine_once(live_server, engine):
    live, counter = counted_server(live_server, engine)
    body = {"query": QUERY, "documents": docs("concurrent", 6)}
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: rerank(live, body), range(8)))
    assert counter.pairs == 6
    assert all(scores(r) == scores(results[0]) for r in results)


def test_score_cache_size_0_sends_every_pair_to_the_engine(live_server, engine):
    live, counter = counted_server(live_server, engine, score_cache_size=0)
    body = {"query": QUERY, "documents": docs("off")}
    first, second = rerank(live, body), rerank(live, body)
    assert counter.pairs == 8 and scores(first) == scores(second)
    assert live.service.score_cache is None


def test_two_servers_on_one_redis_share_their_scores(live_server, engine, redis_server):
    a, a_counter = counted_server(live_server, engine, score_cache_url=redis_server.url)
    b, b_counter = counted_server(live_server, engine, score_cache_url=redis_server.url)
    body = {"query": QUERY, "documents": docs("shared")}
    from_a = rerank(a, body)
    assert a_counter.pairs == 4
    from_b = rerank(b, body)
    assert b_counter.pairs == 0, "the second server scored what the first had"
    assert scores(from_b) == scores(from_a)
    assert metric(b, "rerank_score_cache_hits_total") >= 4


def test_other_weights_at_the_same_path_under_the_same_name_never_hit(
    live_server, engine, redis_server, tiny_model, tmp_path
):
    from make_test_model import build_model

    path = tmp_path / "model"
    shutil.copytree(tiny_model, path)
    old, old_counter = counted_server(live_server, engine, model=str(path), score_cache_url=redis_server.url)
    body = {"query": QUERY, "documents": docs("weights")}
    rerank(old, body)
    assert old_counter.pairs == 4
    build_model(path, shape="tiny", seed=1)  # a new checkpoint copied over the old one
    new, new_counter = counted_server(live_server, engine, model=str(path), score_cache_url=redis_server.url)
    rerank(new, body)
    assert new_counter.pairs == 4, "scores of the old weights were served for the new ones"
    again, again_counter = counted_server(live_server, engine, model=str(path), score_cache_url=redis_server.url)
    rerank(again, body)
    assert again_counter.pairs == 0, "the same new weights should hit"


def test_redis_lost_under_traffic_costs_nothing_but_hits_and_comes_back(live_server, engine, redis_server):
    live, counter = counted_server(live_server, engine, score_cache_url=redis_server.url)
    bodies = [{"query": QUERY, "documents": docs(f"traffic-{i}", 3)} for i in range(12)]
    with live.client() as c:
        expected = [scores(c.post("/v1/rerank", json=b).json()) for b in bodies]
    errors_before = metric(live, "rerank_score_cache_errors_total")
    failures: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        with live.client() as c:
            i = 0
            while not stop.is_set() and i < 2000:
                body = {**bodies[i % len(bodies)], "documents": [*bodies[i % len(bodies)]["documents"], f"new {i}"]}
                response = c.post("/v1/rerank", json=body)
                got = scores(response.json()) if response.status_code == 200 else {}
                if response.status_code != 200 or any(got[j] != s for j, s in expected[i % len(bodies)].items()):
                    failures.append(f"{response.status_code} {response.text[:200]}")
                i += 1

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        redis_server.stop()
        assert wait_until(lambda: metric(live, "rerank_score_cache_errors_total") > errors_before, timeout=60)
        redis_server.start()
    finally:
        stop.set()
        worker.join(120)
    assert not failures, failures[:5]
    # Redis is back: what one server scores now, a server with an empty local cache finds there.
    body = {"query": QUERY, "documents": docs("after-restart")}
    first = rerank(live, body)
    fresh, fresh_counter = counted_server(live_server, engine, score_cache_url=redis_server.url)
    assert scores(rerank(fresh, body)) == scores(first) and fresh_counter.pairs == 0


def test_redis_password_never_reaches_the_log(live_server, engine, redis_server, caplog):
    url = f"redis://:s3cret-pass@127.0.0.1:{redis_server.port + 1}/0"  # nobody listens there
    live, counter = counted_server(live_server, engine, score_cache_url=url)
    with caplog.at_level("DEBUG"):
        rerank(live, {"query": QUERY, "documents": docs("password")})
    assert counter.pairs == 4 and "s3cret-pass" not in caplog.text
    assert "s3cret-pass" not in repr(live.service.settings)


def test_the_cache_identity_follows_the_engines_dtype(live_server, engine, tiny_model):
    """The key holds the model's kind, and the dtype the engine runs, not the one asked for (auto resolves to one)."""
    live, _ = counted_server(live_server, engine)
    identity = live.service.score_cache.identity
    assert identity.endswith(b"; float32")
    from server.engine.engine_args import engine_identity
    from server.engine.model_files import weights_identity

    assert identity == weights_identity(str(tiny_model)) + b"qwen3-reranker; " + engine_identity("float32")


def test_another_vllm_release_behind_one_redis_never_reads_the_old_logits(
    live_server, engine, redis_server, monkeypatch
):
    """After a vLLM upgrade the shared Redis holds the old engine's logits: the new server's keys differ."""
    import vllm

    body = {"query": QUERY, "documents": docs("upgrade")}
    old, old_counter = counted_server(live_server, engine, score_cache_url=redis_server.url)
    rerank(old, body)
    monkeypatch.setattr(vllm, "__version__", vllm.__version__ + ".post1")
    new, new_counter = counted_server(live_server, engine, score_cache_url=redis_server.url)
    rerank(new, body)
    assert old_counter.pairs == 4 and new_counter.pairs == 4, "the upgraded server read the old release's logits"
    monkeypatch.undo()
    same, same_counter = counted_server(live_server, engine, score_cache_url=redis_server.url)
    rerank(same, body)
    assert same_counter.pairs == 0  # the same release on the same device: the shared entries serve it


def test_a_client_request_id_of_warmup_still_uses_the_cache(live_server, engine):
    """The warm-up is marked by the server itself: a client's X-Request-Id cannot skip the cache."""
    live, counter = counted_server(live_server, engine)
    body = {"query": QUERY, "documents": docs("client-says-warmup")}
    with live.client() as c:
        for _ in range(2):
            assert c.post("/v1/rerank", json=body, headers={"X-Request-Id": "warmup"}).status_code == 200
    assert counter.pairs == 4, "the repeat reached the engine"


def test_closing_the_service_closes_its_redis_connection(live_server, engine, engine_loop, redis_server):
    import redis

    def connections() -> int:
        return redis.Redis(port=redis_server.port).info("clients")["connected_clients"]

    live, _ = counted_server(live_server, engine, score_cache_url=redis_server.url)
    rerank(live, {"query": QUERY, "documents": docs("closing")})  # opens its connection
    before = connections()
    engine_loop.run(live.service.close())
    assert wait_until(lambda: connections() < before, timeout=10), "the Redis connection stayed open"
