#!/usr/bin/env python3
"""Write every file that lists the server's settings from the one place they are defined.

`server.core.settings.Settings` defines each setting (its name, type, default and description); the
flags (`--name`) and environment variables (`RERANK_NAME`) follow from it in the server itself. The
files users read and copy are derived here, so none can drift:

- `.env.example`: every setting compose can pass, commented out at its default;
- `docker-compose.yml`: the server's `environment:` list between the `settings:` markers, each
  variable passed from `.env` (or the shell) by name, so that an unset one keeps the server's default;
- `docs/configuration.md`: the table of every flag, variable, default and description;
- `deploy/helm/qwen3-reranker/values.schema.json`: the chart's `config` values (scripts/helm_values_schema.py).

    python scripts/settings_files.py          # rewrite them
    python scripts/settings_files.py --check  # exit 1 if one is out of date (tests/test_docker.py)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import helm_values_schema

ROOT = Path(__file__).resolve().parent.parent
ENV_EXAMPLE = ROOT / ".env.example"
COMPOSE = ROOT / "docker-compose.yml"
CONFIGURATION = ROOT / "docs" / "configuration.md"
# docker-compose.yml sets these itself: the server listens on 0.0.0.0:8000 in its container (the host's
# port is RERANK_HTTP_PORT; the health check and the WebUI expect 8000) and logs to /workspace/vllm.log.
COMPOSE_OWNED = {"host": "0.0.0.0", "port": "8000", "log_file": "/workspace/vllm.log"}
# Variables the server reads beside its settings: a second name for API keys, the Hugging Face token for
# a private or gated model, and OpenTelemetry's own names for the traces' service.
COMPOSE_PASSED = ["RERANK_API_KEYS", "HF_TOKEN", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"]
# compose's own variables (docker-compose.yml reads them; the server never sees them)
COMPOSE_VARIABLES = [
    ("RERANK_VARIANT", "gpu", "the image: gpu (on vLLM's), or cpu with `docker compose -f docker-compose.yml up -d`"),
    ("RERANK_HTTP_PORT", "8000", "the host's port for the API"),
    ("RERANK_WEBUI_PORT", "7860", "the host's port for the WebUI"),
]
BEGIN, END = "# settings: begin", "# settings: end"
# .env.example's example after a setting's line
ENV_EXAMPLES = {
    "model": [
        "# several models behind one endpoint (docs/models.md), e.g. the 0.6B and the 8B on one 80 GB GPU:",
        "#   RERANK_MODEL=Qwen/Qwen3-Reranker-0.6B,Qwen/Qwen3-Reranker-8B",
        "#   RERANK_SERVED_MODEL_NAME=qwen3-reranker-0.6b,qwen3-reranker-8b",
        "#   RERANK_GPU_MEMORY_UTILIZATION=0.25,0.65",
    ]
}


def settings() -> list[tuple[str, str, str, str]]:
    """(section, name, default as text, description) of each setting, in Settings' order."""
    sys.path.insert(0, str(ROOT))
    from server.core.settings import Settings

    sections: dict[str, str] = {}
    section = ""
    source = (ROOT / "server" / "core" / "settings.py").read_text()
    for line in source[source.index("class Settings(") :].splitlines():
        if match := re.match(r"\s+# --- (.+?) -+$", line):
            section = match.group(1)
        elif match := re.match(r"    (\w+): ", line):
            sections.setdefault(match.group(1), section)
    return [
        (sections[name], name, default_text(field.get_default(call_default_factory=True)), field.description or "")
        for name, field in Settings.model_fields.items()
    ]


def default_text(value: Any) -> str:
    if value is None or value == []:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):  # one value per model: comma-separated
        return ",".join(str(v) for v in value)
    return str(value)


def env_example() -> str:
    lines = [
        "# Copy to .env and edit: docker compose reads it. Every variable is optional: one left commented out",
        "# (or empty) keeps the default shown. Written by scripts/settings_files.py from server/core/settings.py.",
        "",
        "# --- docker compose",
    ]
    for name, default, description in COMPOSE_VARIABLES:
        lines += [f"# {description}", f"# {name}={default}"]
    section = None
    for this_section, name, default, description in settings():
        if name in COMPOSE_OWNED:
            continue
        if this_section != section:
            section = this_section
            lines += ["", f"# --- {section}"]
        lines += [f"# {description}", f"# RERANK_{name.upper()}={default}", *ENV_EXAMPLES.get(name, [])]
    lines += ["", "# --- also passed to the server", *(f"# {name}=" for name in COMPOSE_PASSED)]
    return "\n".join(lines) + "\n"


def compose_environment(indent: str) -> list[str]:
    passed = [f"RERANK_{name.upper()}" for _, name, _, _ in settings() if name not in COMPOSE_OWNED]
    fixed = [f"RERANK_{name.upper()}={value}" for name, value in COMPOSE_OWNED.items()]
    return [f"{indent}- {entry}" for entry in [*passed, *COMPOSE_PASSED, *fixed]]


def compose() -> str:
    text = COMPOSE.read_text()
    begin, end = text.index(BEGIN), text.index(END)
    head = text[:begin]
    indent = head[head.rindex("\n") + 1 :]
    body = [
        BEGIN + " (scripts/settings_files.py writes this list from server/core/settings.py)",
        f"{indent}# each variable by name: its value from .env or the shell; unset, the server's default",
        *compose_environment(indent),
        indent,
    ]
    return head + "\n".join(body) + text[end:]


def configuration() -> str:
    owned = ", ".join("`--" + name.replace("_", "-") + "`" for name in COMPOSE_OWNED)
    lines = [
        "# Configuration",
        "",
        "Every setting is a flag of `python -m server` and an environment variable `RERANK_<NAME>` (flags win;",
        "an empty variable counts as unset). Under docker compose, each can be set in `.env` (`.env.example`",
        f"lists them); compose itself sets {owned}.",
        "In the Helm chart they are `config.<camelCase>` values. This page is written by",
        "`scripts/settings_files.py` from `server/core/settings.py`; `python -m server --help` says the same.",
    ]
    section = None
    for this_section, name, default, description in settings():
        if this_section != section:
            section = this_section
            lines += ["", f"## {section[0].upper()}{section[1:]}", ""]
            lines += ["| flag | variable | default | |", "|---|---|---|---|"]
        shown = f"`{default}`" if default else "none"
        lines.append(f"| `--{name.replace('_', '-')}` | `RERANK_{name.upper()}` | {shown} | {description} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is out of date")
    args = parser.parse_args()
    wanted = {ENV_EXAMPLE: env_example(), COMPOSE: compose(), CONFIGURATION: configuration()}
    stale = [path for path, text in wanted.items() if not path.exists() or path.read_text() != text]
    schema = ["--check"] if args.check else []
    sys.argv = [sys.argv[0], *schema]
    schema_status = helm_values_schema.main()
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date; run python scripts/settings_files.py")
        return 1 if stale or schema_status else 0
    for path in stale:
        path.write_text(wanted[path])
        print(f"wrote {path.relative_to(ROOT)}")
    return schema_status


if __name__ == "__main__":
    raise SystemExit(main())
