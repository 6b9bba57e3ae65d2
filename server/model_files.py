"""What is known of the served model's files without loading them: the hub revision they came from."""

from __future__ import annotations

import re
from pathlib import Path

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
