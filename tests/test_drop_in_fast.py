"""A drop-in where teams already run rerankers, without the engine (fast tier): vLLM's score API's
request forms and response shape (validated by vLLM's own models), `use_activation` and
`truncate_prompt_tokens`, SageMaker's /ping and /invocations and `serve`, Vertex AI's routes and
variables. Scores against vLLM's own server on the real engine: tests/test_drop_in.py."""

from __future__ import annotations

import pytest

from tests.fake_engine import fake_server, logit

pytestmark = pytest.mark.anyio
Q, DOCS = "What is the capital of China?", ["Beijing is the capital.", "Gravity pulls.", "Paris is in France."]
FORMS = [("queries", "documents"), ("queries", "items"), ("data_1", "data_2"), ("text_1", "text_2")]


def vllm_score_response(data: dict) -> None:
    """vLLM's own response model accepts the answer (extra fields would pass too: compare keys)."""
    from vllm.entrypoints.pooling.scoring.protocol import ScoreResponse

    parsed = ScoreResponse.model_validate(data)
    assert set(data) == {"id", "object", "created", "model", "data", "usage"} and parsed.object == "list"
    assert all(set(d) == {"index", "object", "score"} and d["object"] == "score" for d in data["data"])


async def rerank_scores(client, query: str, docs: list[str], **extra) -> dict[int, float]:
    response = await client.post("/v1/rerank", json={"query": query, "documents": docs, **extra})
    assert response.status_code == 200, response.text
    return {r["index"]: r["relevance_score"] for r in response.json()["results"]}


@pytest.mark.parametrize(("first", "second"), FORMS)
async def test_every_score_form_one_to_one_one_to_many_and_many_to_many(first, second):
    async with fake_server() as fake:
        expected = await rerank_scores(fake.client, Q, DOCS)
        other = await rerank_scores(fake.client, "Where is Paris?", DOCS)
        for path, body, want in [
            ("/score", {first: Q, second: DOCS[1]}, [expected[1]]),
            ("/v1/score", {first: Q, second: DOCS}, [expected[i] for i in range(3)]),
            ("/v1/score", {first: [Q], second: DOCS}, [expected[i] for i in range(3)]),
            ("/score", {first: [Q, "Where is Paris?", Q], second: DOCS}, [expected[0], other[1], expected[2]]),
        ]:
            response = await fake.client.post(path, json=body)
            assert response.status_code == 200, response.text
            data = response.json()
            vllm_score_response(data)
            assert [d["index"] for d in data["data"]] == list(range(len(want)))
            assert [d["score"] for d in data["data"]] == pytest.approx(want, abs=1e-12)
            assert data["model"] == "qwen3-reranker-test" and data["usage"]["prompt_tokens"] > 0


async def test_use_activation_false_is_the_logit_on_score_and_rerank():
    async with fake_server() as fake:
        probabilities = await rerank_scores(fake.client, Q, DOCS)
        logits = await rerank_scores(fake.client, Q, DOCS, use_activation=False)
        calls = fake.engine.requests()
        assert [logits[i] for i in range(3)] == pytest.approx([logit(p) for p in calls[0].prompts])
        assert all(0 < probabilities[i] < 1 for i in range(3)) and probabilities != logits
        response = await fake.client.post("/score", json={"queries": Q, "documents": DOCS, "use_activation": False})
        assert [d["score"] for d in response.json()["data"]] == pytest.approx([logits[i] for i in range(3)])


async def test_truncate_prompt_tokens_cuts_only_the_documents():
    async with fake_server() as fake:
        long_doc = " ".join(["river"] * 300)
        full = await fake.client.post("/v1/rerank", json={"query": Q, "documents": [long_doc, "short"]})
        assert full.status_code == 200
        cut = await fake.client.post(
            "/v1/rerank", json={"query": Q, "documents": [long_doc, "short"], "truncate_prompt_tokens": 120}
        )
        assert cut.status_code == 200
        uncut, shortened = fake.engine.requests()
        assert len(uncut.prompts[0]) > 120 and len(shortened.prompts[0]) == 120
        assert shortened.prompts[1] == uncut.prompts[1], "a prompt within the limit is untouched"
        assert shortened.prompts[0][-5:] == uncut.prompts[0][-5:], "the prompt's suffix is kept"
        same = await fake.client.post("/score", json={"text_1": Q, "text_2": [long_doc], "truncate_prompt_tokens": 120})
        [cut_long] = [r["relevance_score"] for r in cut.json()["results"] if r["index"] == 0]
        assert same.json()["data"][0]["score"] == pytest.approx(cut_long)
        too_short = await fake.client.post(
            "/v1/rerank", json={"query": Q, "documents": ["a"], "truncate_prompt_tokens": 5}
        )
        assert too_short.status_code == 400 and "truncate_prompt_tokens=5" in too_short.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"queries": [Q, Q], "documents": DOCS}, "pairs are 1:1, 1:N or N:N"),
        ({"queries": Q}, "name the two sides"),
        ({"text_1": Q, "text_2": []}, "at least one text"),
        ({"data_1": Q, "data_2": [{"content": [{"type": "image_url"}]}]}, "data_2"),
        ({"queries": Q, "documents": DOCS, "use_activation": "no"}, "use_activation"),
    ],
)
async def test_a_malformed_score_body_is_a_422_naming_what_is_wrong(body, message):
    async with fake_server() as fake:
        response = await fake.client.post("/score", json=body)
        assert response.status_code == 422, response.text
        assert message in response.json()["error"]["message"]
        assert not fake.engine.requests()


async def test_the_published_request_bodies_refuse_what_the_routes_refuse():
    """/openapi.json's request body of each route, against bodies the route answers: a body the schema
    calls valid is one the route takes (as far as JSON Schema can say it), and the other way round."""
    import jsonschema

    async with fake_server() as fake:
        spec = (await fake.client.get("/openapi.json")).json()

        def published(path: str) -> jsonschema.Draft202012Validator:
            body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
            return jsonschema.Draft202012Validator({**body, "components": spec["components"]})

        score_body, rerank_body = {"queries": Q, "documents": DOCS}, {"query": Q, "documents": DOCS}
        for path, body, takes in [
            ("/score", score_body, True),
            ("/score", {"text_1": [Q], "text_2": DOCS[0]}, True),
            ("/score", {}, False),
            ("/score", {"queries": Q}, False),
            ("/score", {"text_1": Q, "text_2": []}, False),
            ("/score", {"queries": None, "documents": DOCS}, False),
            ("/v1/rerank", rerank_body, True),
            ("/v1/rerank", {"query": Q, "texts": DOCS}, True),
            ("/v1/rerank", score_body, False),
        ]:
            response = await fake.client.post(path, json=body)
            assert (response.status_code == 200) is takes, (path, body, response.text)
            assert published(path).is_valid(body) is takes, (path, body)


async def test_sagemaker_ping_and_invocations_take_every_body_by_its_shape():
    async with fake_server(client_key=None, api_key=[]) as fake:
        assert (await fake.client.get("/ping")).status_code == 200
        cohere = await fake.client.post("/invocations", json={"query": Q, "documents": DOCS})
        assert cohere.status_code == 200 and len(cohere.json()["results"]) == 3
        tei = await fake.client.post("/invocations", json={"query": Q, "texts": DOCS})
        assert tei.status_code == 200 and isinstance(tei.json(), list)
        score = await fake.client.post("/invocations", json={"queries": Q, "items": DOCS})
        assert score.status_code == 200
        vllm_score_response(score.json())
        bad = await fake.client.post("/invocations", json={"query": Q, "texts": "not a list"})
        assert bad.status_code == 422 and "error_type" in bad.json(), "TEI's error shape for a TEI body"
        for service in fake.models.services:
            service.warmed_up = False
        assert (await fake.client.get("/ping")).status_code == 503


async def test_ping_is_public_and_invocations_keep_the_api_key():
    async with fake_server(client_key=None) as fake:
        assert (await fake.client.get("/ping")).status_code == 200
        assert (await fake.client.post("/invocations", json={"query": Q, "documents": DOCS})).status_code == 401


async def test_vertex_routes_take_instances_and_answer_predictions(monkeypatch):
    from server.core.settings import Settings
    from tests.fake_engine import settings

    monkeypatch.setenv("AIP_HTTP_PORT", "8085")
    monkeypatch.setenv("AIP_HEALTH_ROUTE", "/v1/endpoints/e/deployedModels/m")
    monkeypatch.setenv("AIP_PREDICT_ROUTE", "/v1/endpoints/e/deployedModels/m:predict")
    from_env = Settings.from_env(**settings().model_dump(exclude={"port", "health_route", "predict_route"}))
    assert from_env.port == 8085 and from_env.predict_route == "/v1/endpoints/e/deployedModels/m:predict"
    routes = {"health_route": from_env.health_route, "predict_route": from_env.predict_route}
    async with fake_server(client_key=None, api_key=[], **routes) as fake:
        assert (await fake.client.get(routes["health_route"])).status_code == 200
        body = {
            "instances": [{"query": Q, "documents": DOCS}, {"queries": Q, "documents": DOCS[:2]}, {"query": Q}],
            "parameters": {"top_n": 2},
        }
        body["instances"][2]["texts"] = DOCS
        response = await fake.client.post(routes["predict_route"], json=body)
        assert response.status_code == 200, response.text
        first, second, third = response.json()["predictions"]
        assert len(first["results"]) == 2, "parameters are each instance's defaults"
        vllm_score_response(second)
        assert len(third) == 2 and {"index", "score"} <= set(third[0])
        failing = await fake.client.post(
            routes["predict_route"],
            json={"instances": [{"query": Q, "documents": DOCS}, {"query": Q, "documents": "x"}]},
        )
        assert failing.status_code == 422 and failing.json()["error"].startswith("instances[1]: documents")
        empty = await fake.client.post(routes["predict_route"], json={"instances": []})
        assert empty.status_code == 422 and "instances" in empty.json()["error"]


def test_serve_is_sagemakers_contract(monkeypatch, tmp_path):
    from server import cli

    for name in ("RERANK_PORT", "RERANK_MODEL", "SAGEMAKER_BIND_TO_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cli, "SAGEMAKER_MODEL_DIR", tmp_path / "opt-ml-model")
    plain = cli.settings_from_args([])
    assert plain.port == 8000 and plain.model == ["Qwen/Qwen3-Reranker-0.6B"]
    served = cli.settings_from_args(["serve"])
    assert served.port == 8080 and served.model == ["Qwen/Qwen3-Reranker-0.6B"]
    assert served.drain_delay + served.drain_timeout < 30, "SageMaker kills the container 30 s after SIGTERM"
    (tmp_path / "opt-ml-model").mkdir()
    (tmp_path / "opt-ml-model" / "config.json").write_text("{}")
    monkeypatch.setenv("SAGEMAKER_BIND_TO_PORT", "9001")
    monkeypatch.setenv("RERANK_MODEL", "Qwen/Qwen3-Reranker-0.6B")  # as the image sets it
    served = cli.settings_from_args(["serve"])
    assert served.port == 9001 and served.model == [str(tmp_path / "opt-ml-model")], "SageMaker's model wins"
    assert cli.settings_from_args([]).model == ["Qwen/Qwen3-Reranker-0.6B"], "only with serve"
    assert cli.settings_from_args(["serve", "--port", "7000", "--model", "m"]).port == 7000
