"""vLLM's score API side by side with vLLM's own server on the same model (fp32): every request form
vLLM takes, 1:1, 1:N and N:N, gives the same scores (within 1e-4) in the same shape, the
probability and (use_activation false) the logit. Shapes and the rest without the engine:
tests/test_drop_in_fast.py."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import MAX_MODEL_LEN

pytestmark = pytest.mark.engine
Q2 = "Which river carries silt?"
Q1, DOCS = "What is the capital of China?", ["The capital of China is Beijing.", "Gravity pulls.", "北京是中国的首都。"]
FORMS = [("queries", "documents"), ("queries", "items"), ("data_1", "data_2"), ("text_1", "text_2")]


@pytest.fixture(scope="module")
def vllm_url(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """vLLM's own server (`vllm serve`, its rerank template from bench.py) on the tests' model."""
    from rerank_bench.servers import start_servers, stop

    args = argparse.Namespace(
        model=str(tiny_model), dtype="float32", max_model_len=MAX_MODEL_LEN, block_size=32, max_num_seqs=None,
        max_num_batched_tokens=None, enforce_eager=True, kv_cache_gib=1, gpu_memory_utilization=0.3, ours_flags="",
    )  # fmt: skip
    servers = start_servers(args, tmp_path_factory.mktemp("vllm-server"), [("vllm", 1)])
    try:
        yield servers["vllm"][1]
    finally:
        stop(servers)


def bodies() -> list[dict]:
    out = []
    for first, second in FORMS:
        out += [
            {first: Q1, second: DOCS[0]},
            {first: Q1, second: DOCS},
            {first: [Q1, Q2, Q1], second: DOCS},
        ]
    out.append({"queries": Q1, "documents": DOCS, "use_activation": False})
    return out


def test_score_equals_vllms_server_for_every_request_form(client, vllm_url):
    with httpx.Client(base_url=vllm_url, timeout=120) as vllm:
        for body in bodies():
            ours = client.post("/score", json=body)
            theirs = vllm.post("/score", json={**body, "model": "reranker"})
            assert ours.status_code == theirs.status_code == 200, (body, ours.text, theirs.text)
            a, b = ours.json(), theirs.json()
            assert set(a) == set(b) and a["object"] == b["object"] == "list", (a, b)
            assert [(d["index"], d["object"]) for d in a["data"]] == [(d["index"], d["object"]) for d in b["data"]]
            diff = max(abs(x["score"] - y["score"]) for x, y in zip(a["data"], b["data"], strict=True))
            assert diff <= 1e-4, (body, a["data"], b["data"])
            assert a["usage"]["prompt_tokens"] == b["usage"]["prompt_tokens"], body
        # vLLM's rerank with use_activation false: the same logits as ours
        body = {"query": Q1, "documents": DOCS, "use_activation": False}
        ours = {r["index"]: r["relevance_score"] for r in client.post("/v1/rerank", json=body).json()["results"]}
        theirs = vllm.post("/v1/rerank", json={**body, "model": "reranker"}).json()["results"]
        assert max(abs(ours[r["index"]] - r["relevance_score"]) for r in theirs) <= 1e-4
