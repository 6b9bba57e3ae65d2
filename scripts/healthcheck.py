#!/usr/bin/env python3
"""Docker HEALTHCHECK: healthy once GET /ready is 200 (the engine has scored its warm-up)."""

import os
import sys
import urllib.request

port = os.environ.get("RERANK_PORT", "8000")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as exc:  # noqa: BLE001  (any failure is "unhealthy")
    print(f"not ready: {exc}")
    sys.exit(1)
