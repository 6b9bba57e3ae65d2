"""Logging (server/core/log.py): text lines by default, one JSON object per line with --log-format json,
for our loggers and vLLM's alike, and `Engine started.` findable in vllm.log either way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, wait_until

SCRIPT = """
import logging, sys
from pathlib import Path
from server.core.log import setup_logging
setup_logging(Path(sys.argv[1]), "info", sys.argv[2])
from vllm.config.logging import LoggingConfig  # what vLLM does when it builds an engine, in each of its processes
from vllm.logger import configure_logging_if_needed
configure_logging_if_needed(LoggingConfig())
logging.getLogger("server.serving").info("Engine started. model=m warm-up rerank scored in 0.01s")
access = {"request_id": "req-7", "trace_id": "ab" * 16}
logging.getLogger("server.access").info('127.0.0.1 "POST /v1/rerank" 200', extra=access)
logging.getLogger("vllm.engine").warning("a line of vLLM's")
try:
    raise ValueError("boom")
except ValueError:
    logging.getLogger("server.errors").exception("internal error in request %s", "req-8", extra={"request_id": "req-8"})
"""


def log_lines(tmp_path: Path, log_format: str) -> list[str]:
    log = tmp_path / "vllm.log"
    subprocess.run(
        [sys.executable, "-c", SCRIPT, str(log), log_format],
        check=True,
        cwd=ROOT,
        capture_output=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    return log.read_text().splitlines()


def test_json_logs_are_one_object_per_line_with_request_ids(tmp_path):
    lines = log_lines(tmp_path, "json")
    records = [json.loads(line) for line in lines]  # every line parses
    assert {"time", "level", "logger", "process", "pid", "message"} <= set(records[0])
    by_logger = {r["logger"]: r for r in records}
    assert by_logger["server.serving"]["message"].startswith("Engine started.")
    assert by_logger["server.access"]["request_id"] == "req-7"
    assert by_logger["server.access"]["trace_id"] == "ab" * 16  # with tracing on (tests/test_tracing.py)
    assert by_logger["vllm.engine"]["level"] == "WARNING"  # vLLM's logger through its own dictConfig
    assert "ValueError: boom" in by_logger["server.errors"]["exception"]
    assert any("Engine started." in line for line in lines)  # `grep`/`tail` still finds it


@pytest.mark.parametrize("log_format", ["text"])
def test_text_logs_stay_the_default_shape(tmp_path, log_format):
    lines = log_lines(tmp_path, log_format)
    assert any(" INFO [MainProcess] server.serving: Engine started." in line for line in lines)
    assert any("vllm[" in line and "a line of vLLM's" in line for line in lines)
    assert not lines[0].startswith("{")


@pytest.mark.engine
def test_a_server_with_json_logs_writes_json_from_every_process(tiny_model, tmp_path):
    """The real server: its own lines, vLLM's engine-core and worker lines, and the access log."""
    import httpx

    from .helpers import ServerProcess

    server = ServerProcess(tiny_model, tmp_path, ("--log-format", "json"))
    try:
        server.wait_ready()
        response = httpx.post(
            server.url + "/v1/rerank", json={"query": "q", "documents": ["a"]}, headers={"X-Request-Id": "json-1"}
        )
        assert response.status_code == 200
        assert wait_until(lambda: '"request_id": "json-1"' in server.log, timeout=30)  # written after the answer
        records = [json.loads(line) for line in server.log.splitlines() if line.strip()]  # every line parses
    finally:
        server.stop()
    assert any(r["message"].startswith("Engine started.") for r in records)
    assert {"EngineCore"} <= {r["process"].split("_")[0] for r in records}  # vLLM's engine process, in JSON too
    assert any(r.get("request_id") == "json-1" and r["logger"] == "server.access" for r in records)


def test_the_logging_config_handed_to_vllms_processes_is_removed_at_exit(tmp_path):
    script = (
        "import os, sys; from pathlib import Path; from server.core.log import setup_logging; "
        "setup_logging(Path(sys.argv[1])); path = os.environ['VLLM_LOGGING_CONFIG_PATH']; "
        "assert os.path.exists(path); print(path)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "vllm.log")], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.split()[-1])
    assert path.name.startswith("rerank-vllm-logging-") and not path.exists()


def test_engine_started_is_one_line_for_one_model_several_or_several_api_processes():
    from server.core.log import engine_started

    assert engine_started(["m"]) == "Engine started. model=m; ready on /v1/rerank"
    assert engine_started(["a", "b"]) == "Engine started. models=a, b; ready on /v1/rerank"
    assert engine_started(["m"], 2) == "Engine started. model=m; 2 API processes; ready on /v1/rerank"
