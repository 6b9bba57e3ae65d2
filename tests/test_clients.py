"""Every rerank client in the README's clients table, as released, pointed at the live test server
with an API key: each must give the same order and scores as the Cohere shape does.

The TEI-shaped clients (Haystack's HuggingFaceTEIRanker, LlamaIndex's TextEmbeddingInference,
rerankers' TEI provider, LiteLLM's huggingface/) and the Cohere/Jina/vLLM-shaped ones (rerankers'
Jina provider, LiteLLM's cohere/, hosted_vllm/ and jina_ai/) run in their own virtual environment
(`.venv-clients`, from tests/clients-requirements.txt, made once and reused while that file is
unchanged); each test runs one client script there and reads its JSON answer. Raw bodies stand in
for the clients that are services (Dify's OpenAI-compatible plugin, Open WebUI; Dify's TEI plugin,
RAGFlow and Elasticsearch are in tests/test_tei.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from .conftest import API_KEY, ROOT

pytestmark = pytest.mark.engine

REQUIREMENTS = ROOT / "tests" / "clients-requirements.txt"
VENV = ROOT / ".venv-clients"
MODEL = "qwen3-reranker-test"
QUERY = "What is the capital of China?"
DOCS = [
    "Gravity is a force that attracts two bodies towards each other.",
    "The capital of China is Beijing.",
    "北京是中国的首都。",
    "Paris is the capital of France.",
]


@pytest.fixture(scope="session")
def clients_python() -> Path:
    """The clients' virtual environment's python, made (or brought up to date) once."""
    python = VENV / "bin" / "python"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    stamp = VENV / f".installed-{digest}"
    if not stamp.exists():
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        install = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(REQUIREMENTS)]
        result = subprocess.run(install, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        for old in VENV.glob(".installed-*"):
            old.unlink()
        stamp.touch()
    return python


def run_client(python: Path, url: str, code: str) -> object:
    """Run `code` in the clients' environment (URL, KEY, MODEL, QUERY, DOCS defined); it prints JSON."""
    prelude = f"import json\nURL, KEY, MODEL, QUERY, DOCS = {url!r}, {API_KEY!r}, {MODEL!r}, {QUERY!r}, {DOCS!r}\n"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1", "NO_PROXY": "127.0.0.1"}
    result = subprocess.run(
        [str(python), "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def cohere_ranking(client: httpx.Client, docs: list[str] = DOCS) -> list[tuple[int, float]]:
    response = client.post("/v1/rerank", json={"query": QUERY, "documents": docs})
    assert response.status_code == 200, response.text
    return [(r["index"], r["relevance_score"]) for r in response.json()["results"]]


def assert_same_ranking(got: list, want: list[tuple[int, float]], tolerance: float = 1e-6) -> None:
    assert [i for i, _ in got] == [i for i, _ in want], (got, want)
    assert all(abs(a - b) <= tolerance for (_, a), (_, b) in zip(got, want, strict=True)), (got, want)


def test_haystack_tei_ranker(clients_python, server, client):
    code = """
    from haystack import Document
    from haystack.utils import Secret
    from haystack_integrations.components.rankers.huggingface_api import HuggingFaceTEIRanker, TruncationDirection

    docs = [Document(content=d, meta={"i": i}) for i, d in enumerate(DOCS)]
    out = {}
    for raw in (False, True):
        ranker = HuggingFaceTEIRanker(url=URL, top_k=10, raw_scores=raw, token=Secret.from_token(KEY))
        ranked = ranker.run(query=QUERY, documents=docs)["documents"]
        out[str(raw)] = [[d.meta["i"], d.score] for d in ranked]
    long_doc = Document(content=" ".join(["the river"] * 600), meta={"i": 0})
    ranker = HuggingFaceTEIRanker(url=URL, top_k=10, token=Secret.from_token(KEY))
    left = ranker.run(query=QUERY, documents=[long_doc], truncation_direction=TruncationDirection.LEFT)
    out["left"] = left["documents"][0].score
    print(json.dumps(out))
    """
    out = run_client(clients_python, server.url, code)
    want = cohere_ranking(client)
    assert_same_ranking(out["False"], want)
    assert [i for i, _ in out["True"]] == [i for i, _ in want]
    for (_, raw), (_, p) in zip(out["True"], want, strict=True):
        assert abs(raw - math.log(p / (1 - p))) <= 1e-4
    body = {"query": QUERY, "texts": [" ".join(["the river"] * 600)], "truncation_direction": "Left"}
    assert abs(out["left"] - client.post("/rerank", json=body).json()[0]["score"]) <= 1e-6


def test_llamaindex_tei_postprocessor(clients_python, server, client):
    code = """
    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index.postprocessor.tei_rerank import TextEmbeddingInference

    nodes = [NodeWithScore(node=TextNode(text=d, metadata={"i": i})) for i, d in enumerate(DOCS)]
    post = TextEmbeddingInference(model_name=MODEL, base_url=URL, top_n=10, auth_token=f"Bearer {KEY}")
    ranked = post.postprocess_nodes(nodes, query_str=QUERY)
    print(json.dumps([[n.node.metadata["i"], n.score] for n in ranked]))
    """
    assert_same_ranking(run_client(clients_python, server.url, code), cohere_ranking(client))


def test_rerankers_api_ranker_tei_and_jina_providers(clients_python, server, client):
    code = """
    from rerankers import Reranker

    out = {}
    for provider, path in (("text-embeddings-inference", "/rerank"), ("jina", "/v1/rerank")):
        ranker = Reranker(MODEL, model_type="APIRanker", api_provider=provider, api_key=KEY, url=URL + path)
        ranked = ranker.rank(query=QUERY, docs=DOCS, doc_ids=list(range(len(DOCS))))
        out[provider] = [[r.document.doc_id, r.score] for r in ranked.results]
    print(json.dumps(out))
    """
    out = run_client(clients_python, server.url, code)
    assert set(out) == {"text-embeddings-inference", "jina"}
    for ranking in out.values():
        assert_same_ranking(ranking, cohere_ranking(client))


def test_litellm_rerank_with_its_four_providers(clients_python, server, client):
    """One run of the clients' Python for the four (importing LiteLLM takes a while)."""
    code = """
    import litellm

    out = {}
    for provider in ("cohere", "hosted_vllm", "jina_ai", "huggingface"):
        response = litellm.rerank(
            model=provider + "/" + MODEL, query=QUERY, documents=DOCS, api_base=URL, api_key=KEY, top_n=len(DOCS)
        )
        out[provider] = [[r["index"], r["relevance_score"]] for r in response.results]
        if provider in ("cohere", "hosted_vllm"):
            out[provider + " meta"] = dict(response.meta or {})
    print(json.dumps(out))
    """
    out = run_client(clients_python, server.url, code)
    metas = {p: out.pop(p + " meta") for p in ("cohere", "hosted_vllm")}
    assert set(out) == {"cohere", "hosted_vllm", "jina_ai", "huggingface"}
    for ranking in out.values():
        assert_same_ranking(ranking, cohere_ranking(client))
    # the token counts LiteLLM reports (and bills by) come from the server's Cohere-style meta block
    prompt_tokens = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}).json()["usage"]["prompt_tokens"]
    for provider, meta in metas.items():
        assert meta["tokens"]["input_tokens"] == prompt_tokens, (provider, meta)
        assert meta["billed_units"]["search_units"] == 1 and meta["billed_units"]["total_tokens"] == prompt_tokens


def test_dify_openai_compatible_and_open_webui_bodies(client):
    """Dify's OpenAI-API-compatible plugin and Open WebUI's external reranker post Cohere's shape
    to the URL they are given, with the model name and a Bearer key."""
    want = cohere_ranking(client)
    for path in ("/v1/rerank", "/rerank"):
        body = {"model": MODEL, "query": QUERY, "documents": DOCS, "top_n": len(DOCS)}
        results = client.post(path, json=body).json()["results"]
        assert_same_ranking([(r["index"], r["relevance_score"]) for r in results], want)
        assert all(r["document"]["text"] == DOCS[r["index"]] for r in results)
