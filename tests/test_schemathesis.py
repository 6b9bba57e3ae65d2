"""Schemathesis fuzzes every operation of the app's OpenAPI schema: never a 5xx, and every answer
(errors too) conforms to the published schema (real engine). Real answers of every rerank route x
dialect x document echo x long-document strategy validate against their dialect's published model.

Driven through schemathesis' Python API and plain Hypothesis: its pytest plugin does not load
on pytest 9 (`'Function' object has no attribute '_nodeid'`).
"""

from __future__ import annotations

import itertools

import httpx
import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from .conftest import API_KEY

AUTH = {"Authorization": f"Bearer {API_KEY}"}
EXAMPLES_PER_OPERATION = 40


@pytest.mark.engine
def test_no_operation_returns_a_server_error(server):
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json", headers=AUTH)
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert {"POST /v1/rerank", "POST /rerank", "POST /v2/rerank", "GET /v1/models", "GET /ready"} <= labels
    seen: dict[str, set[int]] = {}

    # Valid requests (by the published schema) and invalid ones (wrong types, missing fields,
    # out-of-range values; where an operation takes anything), each mode on its own: a body the
    # schema calls valid is one the routes mostly take (tests/test_drop_in_fast.py), so each pass of
    # valid ones reaches the engine.
    passes = [
        (operation, mode)
        for operation in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if mode is GenerationMode.POSITIVE or len(operation.body) or any(True for _ in operation.iter_parameters())
    ]
    for operation, mode in passes:

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck))
        def fuzz(case) -> None:
            response = case.call(base_url=server.url, headers=AUTH, timeout=60)
            assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}: {response.text}"
            if case.path != "/metrics":  # Prometheus' text format, not JSON
                case.validate_response(response, checks=[response_schema_conformance, content_type_conformance])
            seen.setdefault(f"{operation.label} {mode.name}", set()).add(response.status_code)  # noqa: B023

        fuzz()

    # The fuzzer reached the engine with valid requests of every API and was refused with 4xx for invalid ones.
    for label in ("POST /v1/rerank", "POST /rerank", "POST /v2/rerank", "POST /v1/score", "POST /score"):
        assert 200 in seen[f"{label} POSITIVE"] and 422 in seen[f"{label} NEGATIVE"], seen


@pytest.mark.engine
def test_real_answers_of_every_route_and_dialect_match_the_published_models(server):
    """Each dialect's answers against its own published model (additionalProperties false: a field
    the schema does not name fails too), for every route, echo on and off, truncate and chunk."""
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=120) as client:
        spec = client.get("/openapi.json").json()
        schemas = spec["components"]["schemas"]
        for name in ("RerankResponse", "TeiRank", "RerankRequest", "TeiRerankRequest"):
            assert name in schemas, name
        route_200 = {
            path: spec["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
            for path in ("/v1/rerank", "/rerank", "/v2/rerank")
        }
        long_doc = "a river runs past the mill " * 200  # several windows under chunk
        documents = ["The capital of China is Beijing.", {"text": long_doc, "id": "doc-7", "tags": None}]
        for path, echo, strategy in itertools.product(route_200, (True, False), ("truncate", "chunk")):
            cohere = {"query": "capital", "documents": documents, "return_documents": echo}
            tei = {"query": "capital", "texts": ["Beijing.", long_doc], "return_text": echo, "raw_scores": not echo}
            for dialect, body, model in (
                ("cohere", cohere, {"$ref": "#/components/schemas/RerankResponse"}),
                ("tei", tei, {"type": "array", "items": {"$ref": "#/components/schemas/TeiRank"}}),
            ):
                response = client.post(
                    path, json={**body, "long_document_strategy": strategy, "max_tokens_per_doc": 64}
                )
                assert response.status_code == 200, (path, dialect, response.text)
                answer = response.json()
                for schema in (model, route_200[path]):
                    jsonschema.validate(answer, {**schema, "components": spec["components"]}, cls=_OpenApiValidator)
                if dialect == "cohere":
                    assert all(("document" in r) == echo for r in answer["results"])
                    assert ("passage" in answer["results"][0] or "passage" in answer["results"][1]) == (
                        strategy == "chunk"
                    )
                    assert answer["meta"]["tokens"]["input_tokens"] == answer["usage"]["prompt_tokens"] > 0
                else:
                    assert all(("text" in r) == echo for r in answer)


# OpenAPI 3.1's schemas are JSON Schema 2020-12; "#/components/..." resolves in the document given.
_OpenApiValidator = jsonschema.validators.Draft202012Validator
