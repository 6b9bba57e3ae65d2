"""The README's "Use it from your code" recipes, run as written against a live test server
(real engine): curl, the Cohere SDK (v2 and v1), LangChain and LlamaIndex."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from .conftest import API_KEY, ROOT

pytestmark = pytest.mark.engine

README_URL = "http://localhost:8000"
README_MODEL = "Qwen/Qwen3-Reranker-0.6B"


def recipes(language: str) -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Use it from your code", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def adapted(code: str, url: str, model: str) -> str:
    """The snippet pointed at the test server: its URL, key and model name."""
    assert README_URL in code and "YOUR_API_KEY" in code
    return code.replace(README_URL, url).replace("YOUR_API_KEY", API_KEY).replace(README_MODEL, model)


@pytest.fixture(scope="module")
def python_recipes(server) -> dict[str, dict]:
    """Each Python snippet's variables after running it, keyed by what it imports."""
    found = {}
    for code in recipes("python"):
        namespace: dict = {}
        exec(compile(adapted(code, server.url, server.service.name), "README", "exec"), namespace)
        key = next(k for k in ("langchain", "llama_index", "cohere") if k in code)
        found[key] = namespace
    assert set(found) == {"cohere", "langchain", "llama_index"}
    return found


def expected_order(client) -> list[int]:
    body = {
        "query": "What is the capital of China?",
        "documents": ["Gravity is a force.", "Beijing is the capital of China."],
    }
    return [r["index"] for r in client.post("/v1/rerank", json=body).json()["results"]]


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_recipe(server):
    [code] = recipes("bash")
    out = subprocess.run(["bash", "-c", adapted(code, server.url, "")], capture_output=True, text=True, check=True)
    assert '"relevance_score"' in out.stdout and '"results"' in out.stdout, out.stdout + out.stderr


def test_cohere_recipes(python_recipes, client):
    ns = python_recipes["cohere"]
    assert [r.index for r in ns["response"].results] == expected_order(client)
    assert all(0 < r.relevance_score < 1 for r in ns["response"].results)
    assert sorted(r.index for r in ns["response_v1"].results) == [0, 1]


def test_langchain_recipe(python_recipes, client):
    docs = python_recipes["langchain"]["ranked_docs"]
    texts = ["Gravity is a force.", "Beijing is the capital of China."]
    assert [d.page_content for d in docs] == [texts[i] for i in expected_order(client)]
    assert all(0 < d.metadata["relevance_score"] < 1 for d in docs)


def test_llama_index_recipe(python_recipes, client):
    nodes = python_recipes["llama_index"]["ranked_nodes"]
    texts = ["Gravity is a force.", "Beijing is the capital of China."]
    assert [n.node.get_content() for n in nodes] == [texts[i] for i in expected_order(client)]
    assert all(0 < n.score < 1 for n in nodes)


def test_cohere_v1_max_chunks_per_doc_chunks_a_long_document(server):
    """The v1 SDK sends max_chunks_per_doc alone: the server chunks (its score is the best of 3
    windows, which differs from the truncated document's on this document)."""
    import cohere

    long_document = "The river runs past the old mill. " * 400 + "Beijing is the capital of China."
    documents = [long_document, "Gravity is a force."]
    query = "What is the capital of China?"
    co = cohere.Client(api_key=API_KEY, base_url=server.url)
    response = co.rerank(model=server.service.name, query=query, documents=documents, max_chunks_per_doc=3)
    sdk_scores = {r.index: r.relevance_score for r in response.results}

    def server_score(**extra) -> tuple[float, dict | None]:
        with server.client() as c:
            results = c.post("/v1/rerank", json={"query": query, "documents": documents, **extra}).json()["results"]
        [first] = [r for r in results if r["index"] == 0]
        return first["relevance_score"], first.get("passage")

    chunked, passage = server_score(long_document_strategy="chunk", max_chunks_per_doc=3)
    truncated, _ = server_score(long_document_strategy="truncate")
    assert passage is not None and passage["chunks"] == 3
    assert abs(chunked - truncated) > 1e-3, "this document must score differently chunked, or the test shows nothing"
    assert abs(sdk_scores[0] - chunked) <= 1e-5


def test_cohere_async_client(server, client):
    """As the README says: the async client (what async LangChain code uses) works the same way."""
    import asyncio

    import cohere

    async def run() -> list[int]:
        co = cohere.AsyncClientV2(api_key=API_KEY, base_url=server.url)
        response = await co.rerank(
            model=server.service.name,
            query="What is the capital of China?",
            documents=["Gravity is a force.", "Beijing is the capital of China."],
        )
        return [r.index for r in response.results]

    assert asyncio.run(run()) == expected_order(client)
