"""Several models behind one endpoint: `--model` repeated, a request's `model` picks one.

In-process, two served names on the session's one engine show the routing, readiness and
metrics cheaply; a real server process with two engines (the tiny Qwen3 model and a BERT
cross-encoder) shows each model scoring as it does served alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.core.settings import Settings

from .conftest import API_KEY, LiveServer
from .helpers import DOCS, QUERY, assert_close, server_scores


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    text = client.get("/metrics").text
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


@pytest.fixture(scope="module")
def two_names(module_live_server, tiny_model) -> LiveServer:
    """Models "small" and "large", both the tiny model on the session's engine, not started yet."""
    return module_live_server(start=False, model=[str(tiny_model)] * 2, served_model_name=["small", "large"])


@pytest.mark.engine
def test_ready_waits_for_every_model_and_requests_go_to_the_one_they_name(two_names, engine_loop, engine, tokenizer):
    small, large = two_names.app.state.models.services
    with two_names.client() as c:
        assert c.get("/ready").status_code == 503
        engine_loop.run(small.start(engine, tokenizer))
        waiting = c.get("/ready")
        assert waiting.status_code == 503 and "large" in waiting.json()["error"]["message"]
        engine_loop.run(large.start(engine, tokenizer))
        assert c.get("/ready").json() == {"status": "ready", "model": "small"}  # the default

        body = {"query": QUERY, "documents": DOCS[:3]}
        assert c.post("/v1/rerank", json=body).json()["model"] == "small"
        before = metric(c, "rerank_prompt_tokens_total", model="large")
        answer = c.post("/v1/rerank", json={**body, "model": "large"})
        assert answer.status_code == 200 and answer.json()["model"] == "large"
        tokens = answer.json()["usage"]["prompt_tokens"]
        assert metric(c, "rerank_prompt_tokens_total", model="large") == before + tokens
        assert metric(c, "rerank_engine_up", model="small") == metric(c, "rerank_engine_up", model="large") == 1

        unknown = c.post("/v1/rerank", json={**body, "model": "medium"})
        assert unknown.status_code == 404
        assert "'small', 'large'" in unknown.json()["error"]["message"]
        # TEI's shape: a served name picks its model; any other is ignored, as TEI ignores it
        tei = {"query": QUERY, "texts": DOCS[:3]}
        assert c.post("/rerank", json={**tei, "model": "large"}).status_code == 200
        assert c.post("/rerank", json={**tei, "model": "medium"}).status_code == 200

        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["small", "large"]
        assert c.get("/info").json()["model_id"] == "small"


def test_each_model_gets_its_values_in_order():
    settings = Settings(
        model="a,b",
        served_model_name=["x", "y"],
        model_kind="cross-encoder",
        gpu_memory_utilization="0.25,0.65",
        kv_cache_gib=[2],
    )
    first, second = settings.served_models()
    assert (first.model, first.served_model_name, first.gpu_memory_utilization) == ("a", "x", 0.25)
    assert (second.model, second.served_model_name, second.gpu_memory_utilization) == ("b", "y", 0.65)
    assert first.model_kind == second.model_kind == "cross-encoder" and first.kv_cache_gib == second.kv_cache_gib == 2
    assert [m.served_model_name for m in Settings(model=["a", "b"]).served_models()] == ["a", "b"]


@pytest.mark.engine  # the test model's config
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--served-model-name", "x"], "1 values for 2 models"),
        (["--served-model-name", "x", "--served-model-name", "x"], "its own name"),
        (["--gpu-memory-utilization", "0.6", "--gpu-memory-utilization", "0.6"], "more than the whole GPU"),
        (["--gpu-memory-utilization", "0.5"], "one per --model"),
        (["--served-model-name", "a", "--served-model-name", "b", "--api-processes", "2"], "one API process"),
    ],
    ids=["names", "same-name", "memory-over-1", "one-share", "api-processes"],
)
def test_what_several_models_need_is_checked_before_anything_loads(tiny_model, capsys, flags, message):
    from server.cli import CONFIG_ERROR_EXIT, main

    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(tiny_model), "--model", str(tiny_model), "--log-file", "", *flags])
    assert exit_info.value.code == CONFIG_ERROR_EXIT
    assert message in capsys.readouterr().err


# --- a real server with two engines --------------------------------------------------------------


@pytest.fixture(scope="module")
def two_engines(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from make_test_model import build_cross_encoder

    from .helpers import ServerProcess

    bert = build_cross_encoder(tmp_path_factory.mktemp("several") / "bert")
    workdir = tmp_path_factory.mktemp("two-engines")
    flags = ("--model", str(tiny_model), "--model", str(bert), "--served-model-name", "qwen3")
    flags += ("--served-model-name", "bert", "--api-key", API_KEY, "--score-cache-size", "0")
    server = ServerProcess(tiny_model, workdir, flags)
    try:
        server.wait_ready(timeout=480)
        yield server, bert
    finally:
        server.stop()


@pytest.mark.engine
def test_two_engines_score_as_each_model_served_alone(two_engines, client):
    from tests.reference import CrossEncoderReference

    server, bert = two_engines
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=120) as c:
        alone = server_scores(client, QUERY, DOCS)  # the session's server: the tiny model alone
        assert_close(server_scores(c, QUERY, DOCS), alone, 1e-4)  # the default, qwen3
        assert_close(server_scores(c, QUERY, DOCS, model="qwen3"), alone, 1e-4)
        want = CrossEncoderReference(str(bert), max_length=512).scores(QUERY, DOCS)
        assert_close(server_scores(c, QUERY, DOCS, model="bert"), want, 1e-4)
        refused = c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "model": "bert", "instruction": "x"})
        assert refused.status_code == 400
        cards = {m["id"]: m["max_model_len"] for m in c.get("/v1/models").json()["data"]}
        assert cards == {"qwen3": 512, "bert": 512}
    lines = server.log.splitlines()
    warm = [i for i, line in enumerate(lines) if "warm-up rerank scored" in line]
    started = [i for i, line in enumerate(lines) if "Engine started." in line]
    assert len(warm) == 2 and len(started) == 1 and started[0] > max(warm), "`Engine started.` once, after both"
    assert "models=qwen3, bert" in lines[started[0]]
    config = json.loads((bert / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]  # told apart by its config alone
