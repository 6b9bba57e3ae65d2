"""The container tests' helpers and fixtures (tests/test_container.py, tests/test_gpu_image.py):
podman, the images as the README builds and runs them, a package index for the image builds."""

from __future__ import annotations

import contextlib
import functools
import json
import os
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

from .conftest import ROOT, wait_until
from .helpers import free_port

IN_CI = bool(os.environ.get("CI"))


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


def assert_configured_as_documented(image: str) -> None:
    """What the README and compose rely on, read from the built image's own config (either variant): the
    entrypoint runs `python -m server` (as tests/test_process.py does) through the user-switching script,
    in /workspace, logging to /workspace/vllm.log, on 8000 (API) and 7860 (WebUI), with a health check."""
    from .helpers import ENTRYPOINT

    found = inspect(image)
    config = found["Config"]
    assert config["Entrypoint"] == ["/opt/rerank/scripts/docker-entrypoint.sh", "python3", *ENTRYPOINT[1:]]
    assert config["WorkingDir"] == "/workspace" and "RERANK_LOG_FILE=/workspace/vllm.log" in config["Env"]
    assert {"8000/tcp", "7860/tcp"} <= set(config["ExposedPorts"])
    assert "healthcheck.py" in " ".join((found.get("Healthcheck") or config["Healthcheck"])["Test"])


def scores(url: str) -> dict[int, float]:
    response = httpx.post(url + "/v1/rerank", json=QUERY, timeout=120)
    assert response.status_code == 200, response.text
    return {r["index"]: r["relevance_score"] for r in response.json()["results"]}


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
