"""Priority lanes without the engine (fast tier): the `priority` field in both dialects, an API key's
default, the order the pairs are handed to the engine in, admission's interactive reserve, the
metrics and the access log. Interactive requests overtaking bulk in the real engine:
tests/test_lanes.py."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fake_engine import fake_server, until

pytestmark = pytest.mark.anyio
DOCS = ["Beijing is the capital of China.", "Gravity pulls objects together.", "Paris is in France."]
BODY = {"query": "What is the capital of China?", "documents": DOCS}
TEI_BODY = {"query": "What is the capital of China?", "texts": DOCS}


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """A metric's samples from a /metrics page, by their labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


@pytest.mark.parametrize("body", [BODY, TEI_BODY], ids=["cohere", "tei"])
@pytest.mark.parametrize("bad", ["high", 1.5, None, True, 1001, -1001, [1]])
async def test_a_malformed_priority_is_a_4xx_in_the_bodys_dialect(body, bad):
    async with fake_server() as fake:
        response = await fake.client.post("/v1/rerank", json={**body, "priority": bad})
        if bad is None:  # JSON null: no priority, as if absent
            assert response.status_code == 200
            return
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        message = error if "texts" in body else error["message"]
        assert "priority" in message
        assert not fake.engine.requests(), "a refused request reached the engine"


async def test_priorities_order_the_engine_queue_by_arrival_plus_deferral():
    """Interactive pairs are due at arrival; each bulk priority point defers them --priority-delay-ms."""
    async with fake_server(priority_delay_ms=1000) as fake:
        assert (await fake.client.post("/v1/rerank", json=BODY)).status_code == 200
        assert (await fake.client.post("/v1/rerank", json={**BODY, "priority": 10})).status_code == 200
        assert (await fake.client.post("/rerank", json={**TEI_BODY, "priority": -2})).status_code == 200
        interactive, bulk, urgent = (call.priorities for call in fake.engine.requests())
        assert interactive and bulk and urgent
        assert len(set(interactive)) == 1 and len(set(bulk)) == 1, "a request's documents queue together"
        # 10 s of deferral for the bulk request, though it came after the interactive one
        assert 9.5e6 < bulk[0] - interactive[0] < 11e6
        assert -2.5e6 < urgent[0] - bulk[0] + 10e6 < 0, "priority -2 is due 2 s before its arrival"


async def test_a_chunked_documents_later_windows_are_deferred_after_its_first():
    async with fake_server(priority_delay_ms=100, max_model_len=128) as fake:
        long_doc = " ".join(["word"] * 400)
        body = {"query": "q", "documents": [long_doc, "short"], "long_document_strategy": "chunk"}
        assert (await fake.client.post("/v1/rerank", json=body)).status_code == 200
        (call,) = fake.engine.requests()
        first = call.priorities[0]
        steps = [round((p - first) / 100_000) for p in call.priorities]
        assert steps[: len(steps) - 1] == list(range(len(steps) - 1)) and steps[-1] == 0


async def test_an_api_keys_default_priority_and_a_request_deferring_itself():
    keys = ["bulk-key=10"]
    async with fake_server(api_key_priority=keys, priority_delay_ms=1000) as fake:
        bulk = {"Authorization": "Bearer bulk-key"}
        for body in ({**BODY}, {**BODY, "priority": 0}, {**BODY, "priority": -5}, {**BODY, "priority": 20}):
            assert (await fake.client.post("/v1/rerank", json=body, headers=bulk)).status_code == 200
        assert (await fake.client.post("/v1/rerank", json=BODY)).status_code == 200  # the plain key: 0
        due = [call.priorities[0] for call in fake.engine.requests()]
        deferral = [d - due[-1] for d in due]
        # the bulk key's requests: 10 each (none may claim less), 20 when it asks to wait more
        assert [round(d / 1e6) for d in deferral] == [10, 10, 10, 20, 0]


async def test_the_access_log_carries_the_priority(caplog):
    async with fake_server() as fake:
        with caplog.at_level(logging.INFO, logger="server.access"):
            await fake.client.post("/v1/rerank", json={**BODY, "priority": 7})
    (line,) = [r.getMessage() for r in caplog.records if r.name == "server.access"]
    assert " priority=7 " in line


async def test_bulk_never_takes_the_interactive_reserve_and_gets_429_with_retry_after():
    """--max-pairs-in-flight 12 with 3 reserved: bulk holds at most 9 pairs; an interactive request
    is admitted beside them, a third bulk one is refused."""
    async with fake_server(max_pairs_in_flight=12, max_documents=3, interactive_reserve_pairs=3) as fake:
        gate = fake.engine.hold()
        bulk = [asyncio.create_task(fake.client.post("/v1/rerank", json={**BODY, "priority": 10})) for _ in range(3)]
        await until(lambda: fake.engine.waiting == 3)
        refused = await fake.client.post("/v1/rerank", json={**BODY, "priority": 10})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert "limit 9 for bulk requests" in refused.json()["error"]["message"]
        interactive = asyncio.create_task(fake.client.post("/v1/rerank", json=BODY))
        await until(lambda: fake.engine.waiting == 4)
        full = await fake.client.post("/v1/rerank", json=BODY)
        assert full.status_code == 429, "the whole budget bounds interactive requests too"
        gate.set()
        assert all(r.status_code == 200 for r in await asyncio.gather(*bulk, interactive))
        page = (await fake.client.get("/metrics")).text
    rejected = samples(page, "rerank_lane_rejected_requests_total")
    model = ("model", "qwen3-reranker-test")
    assert rejected[(("lane", "bulk"), model, ("reason", "overloaded"))] == 1
    assert rejected[(("lane", "interactive"), model, ("reason", "overloaded"))] == 1
    pairs = samples(page, "rerank_lane_pairs_total")
    assert pairs[(("lane", "bulk"), model)] == 9 and pairs[(("lane", "interactive"), model)] == 3
    latency = samples(page, "rerank_lane_request_latency_seconds_count")
    assert latency[(("lane", "bulk"),)] == 4 and latency[(("lane", "interactive"),)] == 2
    in_flight = samples(page, "rerank_lane_pairs_in_flight")
    assert in_flight == {(("lane", "bulk"),): 0, (("lane", "interactive"),): 0}


def test_the_default_reserve_leaves_room_for_a_full_bulk_request():
    from tests.fake_engine import settings

    assert settings().interactive_reserve_pairs == 8192 // 4
    assert settings(max_pairs_in_flight=384, max_documents=256).interactive_reserve_pairs == 96
    assert settings(max_pairs_in_flight=1000, max_documents=1000).interactive_reserve_pairs == 0
    with pytest.raises(ValueError, match="interactive_reserve_pairs"):
        settings(max_pairs_in_flight=100, max_documents=10, interactive_reserve_pairs=101)


@pytest.mark.parametrize("entry", ["s3cret-no-priority", "s3cret=high", "=3", "s3cret=2000"])
def test_a_malformed_key_priority_is_refused_without_naming_the_key(entry):
    from tests.fake_engine import settings

    with pytest.raises(ValueError, match="KEY=PRIORITY") as raised:
        settings(api_key_priority=[entry])
    assert "s3cret" not in str(raised.value)


async def test_bulk_waits_at_the_gate_while_interactive_pairs_are_in_the_engine():
    from server.rerank.lanes import EngineLanes

    lanes = EngineLanes(bulk_tokens_limit=100)
    entered: list[str] = []

    async def bulk(name: str, tokens: int, max_wait: float = 60) -> None:
        async with lanes.bulk(tokens, max_wait):
            entered.append(name)
            await asyncio.sleep(0)

    async with lanes.interactive(8):
        first = asyncio.create_task(bulk("first", 60))
        await until(lambda: lanes.waiting == 1)
        await asyncio.sleep(0.01)
        assert entered == [], "bulk went into the engine beside an interactive request"
    await first
    assert entered == ["first"]
    # one step's worth of bulk tokens at a time; a larger request goes in alone
    holder = asyncio.Event()

    async def hold(tokens: int) -> None:
        async with lanes.bulk(tokens, 60):
            await holder.wait()

    held = asyncio.create_task(hold(60))
    await until(lambda: lanes.bulk_tokens == 60)
    second = asyncio.create_task(bulk("second", 50))
    await until(lambda: lanes.waiting == 1)
    holder.set()
    await asyncio.gather(held, second)
    assert entered == ["first", "second"] and lanes.bulk_tokens == 0
    await bulk("alone", 500)  # larger than the limit: in alone, not never


async def test_bulk_ages_past_its_deferral_under_continuous_interactive_load():
    from server.rerank.lanes import EngineLanes

    lanes = EngineLanes(bulk_tokens_limit=100)
    async with lanes.interactive(8):
        async with asyncio.timeout(30):
            async with lanes.bulk(10, max_wait=0.05):
                assert lanes.bulk_tokens == 10
