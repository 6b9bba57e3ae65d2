#!/usr/bin/env python3
"""Docker HEALTHCHECK: healthy once GET /ready is 200 (the engine has scored its warm-up).

It asks the port the server listens on, found as the server finds it: the `--port` flag of the
server's command line (the container's `python3 -m server ...`, PID 1 or a child of an init), else `RERANK_PORT`, else
SageMaker's (`serve`: `SAGEMAKER_BIND_TO_PORT` or 8080) or Vertex AI's (`AIP_HTTP_PORT`), else 8000; the same for
`--host` (an address that binds every interface is reached on loopback).
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

ANY_ADDRESS = {"0.0.0.0", "::", ""}


def server_argv() -> list[str]:
    """The command line of the server in this container: PID 1 (the entrypoint execs it), or a child
    of PID 1 where an init (`docker run --init`) runs it. Empty if neither is `python -m server`."""
    try:
        children = Path("/proc/1/task/1/children").read_text().split()
    except OSError:
        children = []
    for pid in ["1", *children]:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        for i, arg in enumerate(argv[:-1]):
            if arg == "-m" and argv[i + 1] == "server" and "python" in Path(argv[0]).name:
                return argv[i + 2 :]
    return []


def flag(argv: list[str], name: str) -> str | None:
    """The last `--name VALUE` or `--name=VALUE` (argparse: the last one wins)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def ready_url(argv: list[str], env: dict[str, str]) -> str:
    if argv[:1] == ["serve"]:  # SageMaker's contract (server/cli.py)
        platform_port = env.get("SAGEMAKER_BIND_TO_PORT") or "8080"
    else:
        platform_port = env.get("AIP_HTTP_PORT") or "8000"
    port = flag(argv, "--port") or env.get("RERANK_PORT") or platform_port
    host = flag(argv, "--host") or env.get("RERANK_HOST") or "0.0.0.0"
    if host in ANY_ADDRESS:
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/ready"


def main() -> int:
    url = ready_url(server_argv(), dict(os.environ))
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except Exception as exc:  # any failure is "unhealthy"
        print(f"not ready ({url}): {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
