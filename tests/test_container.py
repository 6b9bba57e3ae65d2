"""The image as users run it: the very Dockerfile, built (CPU variant) and run by a real container
engine, the way the README's "On a CPU with Docker" lines and docker-compose.yml run it.

What is a stand-in here, and why (this machine has no Docker engine and reaches no image registry;
its package registries are PyPI and Debian's):
- podman (Debian's) runs instead of Docker: it builds the same Dockerfile (`--format docker`, so the
  HEALTHCHECK is kept) and runs the README's `docker run` line with `docker` replaced by `podman`.
  tests/fixtures/containers.conf adapts podman to this sandbox's kernel (runc; no default ulimits).
  podman schedules health checks with systemd timers and there is no systemd here: the tests run
  `podman healthcheck run`, as the timer would.
- `debian:bookworm-slim`, the CPU image's base, cannot be pulled: scripts/debian-base-image.sh makes
  it from Debian's own packages (debootstrap's minbase of bookworm) under the upstream name.
- The package indexes: the build takes PIP_INDEX_URL and TORCH_INDEX_URL from a local PEP 503 index
  (scripts/wheelhouse.py: the same packages, downloaded by this machine's pip from PyPI and its copy
  of the PyTorch CPU wheel) over loopback, the mirror route the Dockerfile offers every user.
- Networking: `--network host` instead of `-p 8000:8000` (this sandbox gives containers no bridge
  network), so the server's port is given as a flag (`--port`), which the HEALTHCHECK must follow.
- The model: the tests' tiny random-weight model, mounted read-only, instead of a hub download; fp32
  and a short max-model-len as every test server; `--cpu-threads-bind nobind` because the suite's
  own engine shares this machine's cores.
- compose: Debian's docker-compose (1.29) against podman's Docker-compatible API, with an override
  (written by the test) that puts the services on the host's network under their service names
  (compose's merged config, less the port mappings that host networking makes moot), and a Redis
  image built from Debian's redis-server in place of redis:7-alpine.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from .conftest import ROOT, wait_until
from .containers import (
    IN_CI,
    PODMAN_ENV,
    QUERY,
    README,
    START_S,
    Container,
    assert_configured_as_documented,
    container_output,
    inspect,
    podman,
    readme_run,
    root_owned_workspace,
    running,
    scores,
)
from .helpers import free_port

if not IN_CI and (shutil.which("podman") is None or os.geteuid() != 0):
    pytest.skip("needs podman, run as root (.ci/run installs it)", allow_module_level=True)

pytestmark = [pytest.mark.container, pytest.mark.engine]


def readme_cpu_run() -> list[str]:
    return readme_run("**On a CPU with Docker**")


@pytest.fixture(scope="module")
def container(image: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """The README's CPU `docker run` line with podman, as root, on a root-owned ./workspace."""
    with running(readme_cpu_run(), image, model_dir, root_owned_workspace(tmp_path_factory)) as box:
        yield box


def test_the_cpu_image_is_configured_as_documented(image: str):
    assert_configured_as_documented(image)


def test_a_root_owned_workspace_gets_vllm_log_and_engine_started(container: Container):
    log = container.workspace / "vllm.log"
    assert log.exists() and log.stat().st_uid == 1000  # the entrypoint handed the directory to uid 1000
    assert container.workspace.stat().st_uid == 1000
    assert "Engine started." in container.log
    assert inspect(container.name)["State"]["Running"]
    print(f"container: first start to ready {container.first_ready_s:.0f}s")


def test_the_container_scores_as_the_in_process_server(container: Container, live_server):
    in_process = scores(live_server(api_key=[]).url)
    in_container = scores(container.url)
    assert sorted(in_container, key=in_container.get) == sorted(in_process, key=in_process.get)
    for index, score in in_process.items():
        assert abs(in_container[index] - score) <= 1e-4, (index, in_container[index], score)


def test_the_healthcheck_follows_the_port_flag(container: Container):
    config = inspect(container.name)["Config"]
    assert "healthcheck.py" in " ".join(config["Healthcheck"]["Test"])  # kept: built in Docker's format
    assert not any(e.startswith("RERANK_PORT=") for e in config["Env"])  # the port is only a flag
    assert container.healthcheck() == 0
    assert inspect(container.name)["State"]["Health"]["Status"] == "healthy"
    seen = container.health_before_ready
    assert seen and seen[0][0] != 0, "the health check passed before the engine was ready"
    assert all(ready for code, ready in seen if code == 0), "healthy while /ready said otherwise"


def test_stop_drains_in_flight_requests_and_exits_0(container: Container):
    answered: list[tuple[float, int]] = []
    stop_at: list[float] = []

    def traffic() -> None:
        while not stop_at or time.monotonic() < stop_at[0] + 30:
            try:
                response = httpx.post(container.url + "/v1/rerank", json=QUERY, timeout=60)
                answered.append((time.monotonic(), response.status_code))
            except httpx.TransportError:
                if stop_at:
                    return  # the server has closed its socket
                time.sleep(0.1)

    thread = threading.Thread(target=traffic)
    thread.start()
    assert wait_until(lambda: len(answered) >= 2, timeout=120)
    stop_at.append(time.monotonic())
    podman("stop", "-t", "60", container.name, timeout=120)
    thread.join(60)
    state = inspect(container.name)["State"]
    assert state["ExitCode"] == 0, container.tail()
    assert {status for _, status in answered} == {200}, answered
    assert any(at > stop_at[0] for at, _ in answered), "nothing was answered after the stop began (no drain)"
    assert "server stopped (exit code 0)" in container.log


def test_restart_comes_back_ready_with_the_caches_of_the_first_start(container: Container):
    if inspect(container.name)["State"]["Running"]:
        podman("stop", "-t", "60", container.name, timeout=120)
    started = time.monotonic()
    podman("start", container.name)
    container.wait_started(2)
    restart_s = time.monotonic() - started
    assert scores(container.url)
    cache = podman("volume", "inspect", container.cache_volume, "--format", "{{.Mountpoint}}").stdout.strip()
    assert (Path(cache) / "vllm" / "torch_compile_cache").is_dir()  # vLLM's compile cache is in the volume
    print(f"container: first start {container.first_ready_s:.0f}s, restart {restart_s:.0f}s")


def test_a_killed_engine_process_ends_the_container_non_zero(container: Container):
    if not container.running():
        podman("start", container.name)
        container.wait_started(container.log.count("Engine started.") + 1)
    podman("exec", container.name, "pkill", "-9", "-f", "VLLM::EngineCore")
    exit_code = int(podman("wait", container.name, timeout=120).stdout.strip())
    assert exit_code != 0  # so that `restart: unless-stopped` or `--restart on-failure` brings it back
    assert "the vLLM engine died" in container.log or "engine core" in container.log.lower()


@contextlib.contextmanager
def platform_container(image: str, model_mount: list[str], env: dict[str, str], args: list[str]) -> Iterator[str]:
    """The image started the way a managed platform starts it (its arguments and variables, the host's
    network), until it stops; yields the container's name."""
    name = f"rerank-platform-{os.getpid()}"
    podman("rm", "-f", name, check=False)
    flags = [f"-e={k}={v}" for k, v in {"RERANK_DTYPE": "float32", "RERANK_MAX_MODEL_LEN": "512",
                                         "RERANK_CPU_THREADS_BIND": "nobind", **env}.items()]  # fmt: skip
    podman("run", "-d", "--name", name, "--network", "host", "--shm-size=2g", *model_mount, *flags, image, *args)
    try:
        yield name
    finally:
        podman("rm", "-f", "-t", "5", name, check=False)


def wait_for(url: str, name: str) -> None:
    deadline = time.monotonic() + START_S
    while _get(url) != 200:
        state = inspect(name)["State"]
        assert state["Running"], "\n".join(container_output(podman("logs", name, check=False))[-40:])
        assert time.monotonic() < deadline, f"{url} not 200 within {START_S}s"
        time.sleep(2)


def test_sagemaker_runs_the_image_as_serve_on_8080_with_its_model_directory(image: str, model_dir: Path):
    """`docker run IMAGE serve` with the model in /opt/ml/model: /ping and /invocations on 8080 (every
    body by its shape), and SIGTERM ends it within SageMaker's 30 s before SIGKILL, exit 0."""
    with platform_container(image, ["-v", f"{model_dir}:/opt/ml/model:ro"], {}, ["serve"]) as name:
        wait_for("http://127.0.0.1:8080/ping", name)
        url = "http://127.0.0.1:8080/invocations"
        rerank = httpx.post(url, json=QUERY, timeout=60)
        assert rerank.status_code == 200 and len(rerank.json()["results"]) == 4, rerank.text
        score = httpx.post(url, json={"queries": QUERY["query"], "items": QUERY["documents"][:2]}, timeout=60)
        assert score.status_code == 200 and [d["index"] for d in score.json()["data"]] == [0, 1], score.text
        started = time.monotonic()
        podman("stop", "-t", "30", name, timeout=120)
        stopped_in = time.monotonic() - started
        state = inspect(name)["State"]
        assert state["ExitCode"] == 0 and stopped_in < 30, (state["ExitCode"], stopped_in)


def test_vertex_ai_runs_the_image_on_its_port_and_routes(image: str, model_dir: Path):
    """Vertex AI's variables: the port, the health route (as /ready) and the predict route
    (`instances` in, `predictions` out)."""
    port = free_port()
    env = {"AIP_HTTP_PORT": str(port), "AIP_HEALTH_ROUTE": "/v1/endpoints/1/deployedModels/2",
           "AIP_PREDICT_ROUTE": "/v1/endpoints/1/deployedModels/2:predict", "AIP_MODE": "PREDICTION"}  # fmt: skip
    mount = ["-v", f"{model_dir}:/models/tiny:ro"]
    with platform_container(image, mount, env, ["--model", "/models/tiny"]) as name:
        base = f"http://127.0.0.1:{port}"
        wait_for(base + env["AIP_HEALTH_ROUTE"], name)
        body = {
            "instances": [QUERY, {"queries": QUERY["query"], "documents": QUERY["documents"][:2]}],
            "parameters": {"top_n": 1},
        }
        response = httpx.post(base + env["AIP_PREDICT_ROUTE"], json=body, timeout=60)
        assert response.status_code == 200, response.text
        rerank, score = response.json()["predictions"]
        assert len(rerank["results"]) == 1 and len(score["data"]) == 2


def test_an_unreadable_model_directory_is_one_line_naming_path_and_uid(image: str, tmp_path: Path):
    secret = tmp_path / "secret-model"
    secret.mkdir(mode=0o700)
    (secret / "config.json").write_text("{}")
    result = podman(
        "run", "--rm", "--network", "host", "--shm-size=2g", "-v", f"{secret}:/models/secret:ro",
        image, "--model", "/models/secret", "--port", str(free_port()),
        check=False, timeout=300,
    )  # fmt: skip
    lines = container_output(result)
    assert result.returncode == 2, lines
    assert len(lines) == 1, lines
    assert "/models/secret" in lines[0] and "uid 1000" in lines[0], lines


# --- docker-compose.yml --------------------------------------------------------------------------


def sandbox_override(path: Path, model: Path, port: int, webui_port: int, redis_port: int) -> None:
    """The services on the host's network (no bridge here), reachable by their service names."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    redis_command = compose["services"]["redis"]["command"]
    assert redis_command[0] == "redis-server"
    override = {
        "services": {
            "reranker": {
                "network_mode": "host",
                "extra_hosts": ["redis:127.0.0.1"],
                "environment": {"RERANK_PORT": str(port), "RERANK_CPU_THREADS_BIND": "nobind"},
                "volumes": [f"{model}:/models/tiny:ro"],
            },
            "webui": {
                "network_mode": "host",
                "extra_hosts": ["reranker:127.0.0.1"],
                "command": [
                    "--server-url",
                    f"http://reranker:{port}",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(webui_port),
                ],
            },
            "redis": {
                "image": "localhost/redis-standin:7",
                "network_mode": "host",
                "command": ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", *redis_command[1:]],
            },
        }
    }
    path.write_text(yaml.safe_dump(override))


def test_docker_compose_comes_up_on_a_cpu_with_the_webui_and_the_cache_profile(
    image: str, model_dir: Path, docker_api: str, tmp_path: Path
):
    podman(
        "build", "--network", "host", "--pull=never", "-t", "localhost/redis-standin:7",
        "-f", str(ROOT / "tests" / "fixtures" / "redis-standin.Containerfile"), str(ROOT / "tests" / "fixtures"),
        timeout=900,
    )  # fmt: skip
    port, webui_port, redis_port = free_port(), free_port(), free_port()
    override = tmp_path / "sandbox.yml"
    sandbox_override(override, model_dir, port, webui_port, redis_port)
    project = f"rerank-compose-{os.getpid()}"
    # The README's CPU path: RERANK_VARIANT=cpu and docker-compose.yml alone (no GPU request), here
    # with the sandbox's network override; ./workspace is the project directory's.
    env = {
        **PODMAN_ENV,
        "DOCKER_HOST": docker_api,
        "RERANK_VARIANT": "cpu",
        "RERANK_MODEL": "/models/tiny",
        "RERANK_DTYPE": "float32",
        "RERANK_MAX_MODEL_LEN": "512",
        "RERANK_SCORE_CACHE_URL": f"redis://redis:{redis_port}/0",
    }
    # compose's own merge of docker-compose.yml and the override, less the port mappings, which the
    # host's network makes moot (docker-compose refuses both together and an override cannot drop them)
    compose = ["docker-compose", "-p", project, "--project-directory", str(tmp_path), "--profile", "cache"]
    files = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(override)]
    rendered = subprocess.run([*compose, *files, "config"], env=env, capture_output=True, text=True, check=True)
    merged = yaml.safe_load(rendered.stdout)
    for service in merged["services"].values():
        assert service.pop("ports", None) or service.get("profiles"), service  # only ports are dropped
    (tmp_path / "merged.yml").write_text(yaml.safe_dump(merged))
    compose += ["-f", str(tmp_path / "merged.yml")]
    reranker = f"{project}_reranker_1"
    try:
        up = subprocess.Popen(
            [*compose, "up", "-d", "--no-build"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.monotonic() + START_S
        # compose starts the WebUI once the server is healthy; podman's timer is our loop here
        while up.poll() is None:
            assert time.monotonic() < deadline, "docker-compose up did not finish"
            if podman("container", "exists", reranker, check=False).returncode == 0:
                podman("healthcheck", "run", reranker, check=False)
            time.sleep(3)
        output = up.stdout.read() if up.stdout else ""
        assert up.returncode == 0, output
        assert inspect(reranker)["State"]["Health"]["Status"] == "healthy"
        assert "Engine started." in (tmp_path / "workspace" / "vllm.log").read_text()
        assert inspect(reranker)["HostConfig"]["ShmSize"] >= 2 * 1024**3  # compose's shm_size
        # the WebUI in its container reaches the server in its container
        from gradio_client import Client

        assert wait_until(lambda: _get(f"http://127.0.0.1:{webui_port}/") == 200, timeout=120)
        table, _, message, status, *_ = Client(f"http://127.0.0.1:{webui_port}/", verbose=False).predict(
            QUERY["query"], "\n".join(QUERY["documents"][:3]), "", 0, "truncate", None, api_name="/on_submit"
        )
        assert "Ready" in status, status
        assert len(table["data"]) == 3, (table, message)
        # the server scores through the profile's Redis
        import redis

        first = scores(f"http://127.0.0.1:{port}")
        assert wait_until(lambda: redis.Redis(port=redis_port).dbsize() >= len(first), timeout=30)
        assert scores(f"http://127.0.0.1:{port}") == first
        # `docker compose stop`: both end on SIGTERM, exit 0 (not 137, killed at the time-out)
        subprocess.run([*compose, "stop", "-t", "60"], env=env, capture_output=True, check=True, timeout=300)
        for service in ("reranker", "webui"):
            assert inspect(f"{project}_{service}_1")["State"]["ExitCode"] == 0, service
    finally:
        down = subprocess.run(
            [*compose, "down", "-v", "-t", "60"], env=env, capture_output=True, text=True, timeout=300
        )
        print(down.stdout, down.stderr)


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.TransportError:
        return 0


# --- static checks of what users copy --------------------------------------------------------------


def test_every_documented_docker_run_of_the_image_gives_it_shared_memory():
    documents = {"README.md": README, "Dockerfile": (ROOT / "Dockerfile").read_text()}
    documents |= {f"docs/{p.name}": p.read_text() for p in (ROOT / "docs").glob("*.md")}
    found = 0
    for name, text in documents.items():
        joined = re.sub(r"\\\n\s*", " ", text)  # continued lines as one
        for line in joined.splitlines():
            if "docker run" in line and "qwen3-rerank" in line:
                found += 1
                assert "--shm-size" in line or "--ipc=host" in line, f"{name}: {line.strip()}"
    assert found >= 3
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["reranker"]["shm_size"] == "2gb"
