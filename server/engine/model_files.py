"""What is known of the served model's files without loading them: the hub revision they came from,
an identity that changes whenever the weights do, and its config."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

COMMIT = re.compile(r"^[0-9a-f]{40}$")


def hub_revision(model: str) -> str | None:
    """The Hugging Face commit of `model`: a path inside the hub cache (`.../snapshots/<commit>`),
    or a hub id whose `refs/main` the local cache holds; None for any other local directory."""
    path = Path(model)
    if path.exists():
        resolved = path.resolve()
        if resolved.parent.name == "snapshots" and COMMIT.match(resolved.name):
            return resolved.name
        return None
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        return None
    ref = Path(HF_HUB_CACHE) / f"models--{model.replace('/', '--')}" / "refs" / "main"
    try:
        commit = ref.read_text().strip()
    except OSError:
        return None
    return commit if COMMIT.match(commit) else None


def unreadable_model_path(model: str) -> str | None:
    """Why a local model `model` cannot be read by this process's uid (None if it can, or if `model`
    names no local path: a hub id). A path that does not exist is an error when it looks like a path."""
    path = Path(model).expanduser()
    try:
        is_dir = path.is_dir()
        exists = is_dir or path.exists()
    except PermissionError as exc:
        return f"{exc.filename or path}: permission denied"
    if not exists:
        return "no such file or directory" if model.startswith(("/", "./", "../", "~")) else None
    if not is_dir:
        return None if os.access(path, os.R_OK) else f"{path}: permission denied"
    if not os.access(path, os.R_OK | os.X_OK):
        return f"{path}: permission denied"
    for root, dirs, files in os.walk(path):
        for name in dirs:
            if not os.access(Path(root, name), os.R_OK | os.X_OK):
                return f"{Path(root, name)}: permission denied"
        for name in files:
            if not os.access(Path(root, name), os.R_OK):
                return f"{Path(root, name)}: permission denied"
    return None


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
CHUNK = 1 << 20


def model_dir(model: str) -> Path | None:
    """The directory of the model's files: `model` itself, or the hub cache's snapshot of it."""
    path = Path(model)
    if path.is_dir():
        return path.resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception:
        return None


def weights_identity(model: str) -> bytes:
    """What changes whenever the weights do (the score cache's model identity), never the path or
    the served name alone: for a hub snapshot its commit and its files' sizes; for any other
    directory a BLAKE2b hash of its weight files' and config.json's contents (about a second per
    GB, once at start-up)."""
    directory = model_dir(model)
    if directory is None:
        raise FileNotFoundError(f"no local files for model {model!r}")
    digest = hashlib.blake2b(digest_size=32)
    files = sorted(
        p for p in directory.iterdir() if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name == "config.json")
    )
    commit = hub_revision(str(directory))
    if commit is not None:
        digest.update(f"hub:{commit}".encode())
        for p in files:
            digest.update(f"{p.name}:{p.stat().st_size}".encode())
        return digest.digest()
    for p in files:
        digest.update(f"{p.name}:".encode())
        with open(p, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
    return digest.digest()


def read_config(model: str) -> dict[str, Any]:
    """The model's config.json: in `model` itself, or the hub's copy (cached, or fetched as vLLM would)."""
    path = Path(model) / "config.json"
    if not path.is_file():
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(model, "config.json"))
    with open(path) as f:
        config = json.load(f)
    if not isinstance(config, dict):
        raise ValueError(f"{path} is not a JSON object")
    return config
