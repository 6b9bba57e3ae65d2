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
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .conftest import ROOT, wait_until
from .test_process import free_port

IN_CI = bool(os.environ.get("CI"))
if not IN_CI and (shutil.which("podman") is None or os.geteuid() != 0):
    pytest.skip("needs podman, run as root (.ci/run installs it)", allow_module_level=True)

pytestmark = [pytest.mark.container, pytest.mark.engine]

IMAGE = "qwen3-rerank:cpu"  # the README's tag; docker-compose.yml's with RERANK_VARIANT=cpu
README = (ROOT / "README.md").read_text()
PODMAN_ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "tests" / "fixtures" / "containers.conf")}
WHEELHOUSE = ROOT / "build" / "wheelhouse"
# The local package index listens on a fixed loopback address when it can: the build arguments that
# name it are part of the image's layer cache key, so a fixed URL lets a second run reuse the layers.
INDEX_HOST, INDEX_PORT = "127.77.0.1", 8088
START_S = 900  # a first start compiles (torch.compile); slow machines take several times this one's 95 s
TEST_FLAGS = ["--dtype", "float32", "--max-model-len", "512", "--cpu-threads-bind", "nobind"]
QUERY = {
    "query": "What is the capital of China?",
    "documents": [
        "The capital of China is Beijing.",
        "Gravity is a force.",
        "北京是中国的首都。",
        "Paris is the capital of France. " * 200,  # longer than max-model-len: truncated
    ],
}


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], env=PODMAN_ENV, capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"podman {' '.join(args)}: {result.stdout}{result.stderr}"
    return result


def container_output(result: subprocess.CompletedProcess[str]) -> list[str]:
    """What the container printed, less podman's own complaints about systemd (`time="..." level=...`)."""
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if line.strip() and not line.startswith('time="')]


def inspect(name: str) -> dict[str, Any]:
    return json.loads(podman("inspect", name).stdout)[0]


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def package_index() -> Iterator[str]:
    """scripts/wheelhouse.py's index of what the image installs, served over loopback."""
    done = WHEELHOUSE / ".complete"
    if not done.exists() or done.stat().st_mtime < (ROOT / "pyproject.toml").stat().st_mtime:
        image_python = ROOT / "build" / "image-python"  # Debian's python3, the image's Python
        if not (image_python / "bin" / "python").exists():
            subprocess.run(["/usr/bin/python3", "-m", "venv", str(image_python)], check=True)
        wheelhouse = [sys.executable, str(ROOT / "scripts" / "wheelhouse.py"), str(WHEELHOUSE)]
        subprocess.run([*wheelhouse, "--python", str(image_python / "bin" / "python")], check=True, timeout=1800)
        done.touch()
    handler = functools.partial(QuietHandler, directory=str(WHEELHOUSE))
    try:
        httpd = ThreadingHTTPServer((INDEX_HOST, INDEX_PORT), handler)
    except OSError:
        httpd = ThreadingHTTPServer((INDEX_HOST, 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://{INDEX_HOST}:{httpd.server_address[1]}/simple"
    httpd.shutdown()


@pytest.fixture(scope="module")
def image(package_index: str) -> str:
    """The Dockerfile built with --build-arg VARIANT=cpu (podman keeps unchanged layers between runs)."""
    subprocess.run(["bash", str(ROOT / "scripts" / "debian-base-image.sh"), "podman"], env=PODMAN_ENV, check=True)
    podman(
        "build", "--format", "docker", "--network", "host", "--pull=never",
        "--build-arg", "VARIANT=cpu",
        "--build-arg", f"PIP_INDEX_URL={package_index}",
        "--build-arg", f"TORCH_INDEX_URL={package_index}",
        "--build-arg", f"PIP_TRUSTED_HOST={INDEX_HOST}",
        "-t", IMAGE, str(ROOT),
        timeout=3600,
    )  # fmt: skip
    return IMAGE


@pytest.fixture(scope="module")
def model_dir(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model, readable for the container's uid 1000 (as the README asks of a mounted model)."""
    model = tmp_path_factory.mktemp("container-model") / "tiny"
    shutil.copytree(tiny_model, model)
    subprocess.run(["chmod", "-R", "a+rX", str(model)], check=True)
    return model


def readme_run(heading: str) -> list[str]:
    """The `docker run` line of the README's block under `heading`, as words."""
    block = README.split(heading, 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    [line] = [line for line in block.splitlines() if "docker run" in line]
    words = shlex.split(line.split("&&", 1)[1])
    assert words[:2] == ["docker", "run"], line
    return words


def readme_cpu_run() -> list[str]:
    return readme_run("**On a CPU with Docker**")


@dataclass
class Container:
    name: str
    port: int
    workspace: Path
    cache_volume: str
    url: str = ""
    first_ready_s: float = 0.0
    # during the first start: each health check's exit code, with whether /ready answered 200 after it
    health_before_ready: list[tuple[int, bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        path = self.workspace / "vllm.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def running(self) -> bool:
        return inspect(self.name)["State"]["Running"]

    def ready(self) -> bool:
        try:
            return httpx.get(self.url + "/ready", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def healthcheck(self) -> int:
        return podman("healthcheck", "run", self.name, check=False).returncode

    def wait_started(self, times: int) -> list[tuple[int, bool]]:
        """Wait until vllm.log says `Engine started.` `times` times; the health checks run meanwhile,
        each with whether /ready answered 200 just after it."""
        seen: list[tuple[int, bool]] = []
        deadline = time.monotonic() + START_S
        while self.log.count("Engine started.") < times:
            assert self.running(), f"the container exited:\n{self.tail()}"
            assert time.monotonic() < deadline, f"no `Engine started.` within {START_S}s:\n{self.tail()}"
            seen.append((self.healthcheck(), self.ready()))
            time.sleep(2)
        assert wait_until(self.ready, timeout=60), self.tail()
        return seen

    def tail(self) -> str:
        return "\n".join(container_output(podman("logs", self.name, check=False))[-40:])


def sandbox_run(words: list[str], box: Container, image: str, model_dir: Path) -> list[str]:
    """podman's arguments for a README `docker run` line (from `run` on) in this sandbox: the host's network
    for `-p` (the port becomes a flag), the test's container name and cache volume, the test model mounted
    read-only, and no `--gpus` (no GPU here)."""
    argv: list[str] = []
    i = 2
    while i < len(words):
        word = words[i]
        if word == "-p":  # stand-in: the host's network (no bridge here); the port is a flag below
            argv += ["--network", "host"]
            i += 2
            continue
        if word == "--gpus":
            i += 2
            continue
        if word == "--name":
            argv += ["--name", box.name]
            i += 2
            continue
        if word == "-v":
            source, target = words[i + 1].split(":", 1)
            source = {"$PWD/workspace": str(box.workspace), "rerank-cache": box.cache_volume}.get(source, source)
            argv += ["-v", f"{source}:{target}"]
            i += 2
            continue
        if word == image:  # the model mounted read-only, before the image's name
            argv += ["-v", f"{model_dir}:/models/tiny:ro", word]
        elif word == "--model":
            argv += ["--model", "/models/tiny"]
            i += 2
            continue
        else:
            argv.append(word)
        i += 1
    return [*argv, "--port", str(box.port), *TEST_FLAGS]


@contextlib.contextmanager
def running(words: list[str], image: str, model_dir: Path, workspace: Path) -> Iterator[Container]:
    """The README's `docker run` line (`words`) run with podman as root on `workspace`, until `Engine started.`"""
    suffix = f"{os.getpid()}-{image.replace(':', '-')}"
    box = Container(
        name=f"rerank-test-{suffix}", port=free_port(), workspace=workspace, cache_volume=f"rerank-cache-{suffix}"
    )
    assert "--shm-size=2g" in words or "--ipc=host" in words, "the README's docker run line lost its shared memory"
    argv = sandbox_run(words, box, image, model_dir)
    podman("rm", "-f", box.name, check=False)
    started = time.monotonic()
    try:
        podman("run", *argv)
        box.health_before_ready = box.wait_started(1)
        box.first_ready_s = time.monotonic() - started
        yield box
    finally:
        podman("rm", "-f", "-t", "5", box.name, check=False)
        podman("volume", "rm", "-f", box.cache_volume, check=False)


def root_owned_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workspace = tmp_path_factory.mktemp("container-host") / "workspace"
    workspace.mkdir()  # as `mkdir -p workspace` by root: root-owned
    assert workspace.stat().st_uid == 0
    return workspace


@pytest.fixture(scope="module")
def container(image: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """The README's CPU `docker run` line with podman, as root, on a root-owned ./workspace."""
    with running(readme_cpu_run(), image, model_dir, root_owned_workspace(tmp_path_factory)) as box:
        yield box


def assert_configured_as_documented(image: str) -> None:
    """What the README and compose rely on, read from the built image's own config (either variant): the
    entrypoint runs `python -m server` (as tests/test_process.py does) through the user-switching script,
    in /workspace, logging to /workspace/vllm.log, on 8000 (API) and 7860 (WebUI), with a health check."""
    from .test_process import ENTRYPOINT

    found = inspect(image)
    config = found["Config"]
    assert config["Entrypoint"] == ["/opt/rerank/scripts/docker-entrypoint.sh", "python3", *ENTRYPOINT[1:]]
    assert config["WorkingDir"] == "/workspace" and "RERANK_LOG_FILE=/workspace/vllm.log" in config["Env"]
    assert {"8000/tcp", "7860/tcp"} <= set(config["ExposedPorts"])
    assert "healthcheck.py" in " ".join((found.get("Healthcheck") or config["Healthcheck"])["Test"])


def test_the_cpu_image_is_configured_as_documented(image: str):
    assert_configured_as_documented(image)


def scores(url: str) -> dict[int, float]:
    response = httpx.post(url + "/v1/rerank", json=QUERY, timeout=120)
    assert response.status_code == 200, response.text
    return {r["index"]: r["relevance_score"] for r in response.json()["results"]}


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


@pytest.fixture
def docker_api(tmp_path: Path) -> Iterator[str]:
    """podman's Docker-compatible API on a unix socket, for Debian's docker-compose."""
    if shutil.which("docker-compose") is None and not IN_CI:
        pytest.skip("needs Debian's docker-compose (.ci/run installs it)")
    sock = tmp_path / "podman.sock"
    proc = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{sock}"],
        env=PODMAN_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert wait_until(sock.exists, timeout=60), "podman system service did not start"
    yield f"unix://{sock}"
    proc.terminate()
    proc.wait(30)


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
