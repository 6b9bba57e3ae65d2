"""The dashboard's panels and the alerts on a real Prometheus (Debian's, started here) scraping
live servers under traffic, one with one API process and one with two (prometheus-client's
multiprocess mode): every panel's query and every alert's expression (its threshold left out, so
that a quiet server still answers) parses and returns data."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from .conftest import API_KEY, wait_until
from .helpers import ServerProcess, free_port

CHART_FILES = Path(__file__).resolve().parent.parent / "deploy" / "helm" / "qwen3-reranker" / "files"
pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(
        shutil.which("prometheus") is None and not os.environ.get("CI"), reason="needs Debian's prometheus"
    ),
]
THRESHOLD = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*[0-9.e+-]+\s*$")


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((CHART_FILES / "dashboard.json").read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]


def alert_queries() -> list[tuple[str, str]]:
    groups = yaml.safe_load((CHART_FILES / "alerts.yaml").read_text())["groups"]
    out = []
    for rule in (r for g in groups for r in g["rules"]):
        expr = rule["expr"].strip()
        assert THRESHOLD.search(expr), f"{rule['alert']}: no threshold to leave out"
        out.append((rule["alert"], THRESHOLD.sub("", expr)))
    return out


@pytest.fixture
def two_process_server(tiny_model: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(tiny_model, tmp_path, ("--api-processes", "2", "--metrics-public"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def prometheus(tmp_path: Path) -> tuple[str, Path]:
    """Where Prometheus will listen (a free loopback port) and its config file's path."""
    (tmp_path / "prometheus").mkdir()
    return f"http://127.0.0.1:{free_port()}", tmp_path / "prometheus.yml"


def start_prometheus(url: str, config: Path, jobs: dict[str, tuple[str, str | None]]) -> subprocess.Popen:
    scrape = []
    for job, (target, key) in jobs.items():
        entry = {
            "job_name": job,
            "scrape_interval": "1s",
            "static_configs": [{"targets": [target], "labels": {"pod": job, "namespace": "test"}}],
        }
        if key:
            entry["authorization"] = {"credentials": key}
        scrape.append(entry)
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": scrape}))
    port = url.rsplit(":", 1)[1]
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={config.parent / 'prometheus'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert wait_until(lambda: _status(url + "/-/ready") == 200, timeout=120), "prometheus did not start"
    return proc


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.TransportError:
        return 0


def query(url: str, expr: str) -> list:
    response = httpx.get(url + "/api/v1/query", params={"query": expr}, timeout=30)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", (expr, body)
    return body["data"]["result"]


def traffic(base: str, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=base, headers=headers, timeout=120) as c:
        body = {"query": "what does the river carry", "documents": ["silt and sand", "a boat", "nothing at all"]}
        for _ in range(3):  # the repeats are score-cache hits
            assert c.post("/v1/rerank", json=body).status_code == 200
        assert c.post("/rerank", json={"query": "q", "texts": ["a", "b"]}).status_code == 200
        assert c.post("/v1/rerank", json={"query": "q"}).status_code == 422  # an error for the errors panel


def test_every_panel_and_alert_expression_returns_data_from_a_real_scrape(live_server, two_process_server, prometheus):
    url, config = prometheus
    one = live_server(score_cache_size=1000)
    jobs = {
        "one-process": (one.url.removeprefix("http://"), API_KEY),
        "two-processes": (two_process_server.url.removeprefix("http://"), None),
    }
    proc = start_prometheus(url, config, jobs)
    try:
        for job, base in (("one-process", one.url), ("two-processes", two_process_server.url)):
            traffic(base, {"Authorization": f"Bearer {API_KEY}"} if job == "one-process" else {})

        # every job scraped after the traffic, twice at least (a rate needs two samples)
        def scraped() -> bool:
            result = query(url, 'count_over_time(rerank_requests_total{route="/v1/rerank", status="200"}[1m])')
            return {r["metric"]["job"] for r in result if float(r["value"][1]) >= 3} == set(jobs)

        assert wait_until(scraped, timeout=120, interval=1), query(url, "up")
        for job in jobs:
            assert query(url, f'rerank_engine_up{{job="{job}"}} == 1'), job
            assert query(url, f'rerank_max_pairs_in_flight{{job="{job}"}}'), job
        empty = [(name, expr) for name, expr in panel_queries() + alert_queries() if not query(url, expr)]
        assert not empty, empty
    finally:
        proc.terminate()
        proc.wait(30)
