"""Zero-loss rolling restart behind a real load balancer, as an operator (or Kubernetes) does it.

Two replicas (`python -m server`, real engine) behind HAProxy from Debian: health check
`GET /ready` every second, **no retries** (what a Kubernetes Service with a readiness probe gives).
A bounded steady load of small rerank requests runs while each replica in turn gets SIGTERM, exits,
starts again on the same port (the other replica still serving) and comes back into rotation.
Every request must be answered 200 with full results.
"""

from __future__ import annotations

import csv
import io
import shutil
import signal
import subprocess
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest

from .conftest import wait_until
from .helpers import SHARED_HOST_FLAGS, ServerProcess, free_port

pytestmark = [pytest.mark.engine, pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy")]

DOCS = ["The capital of France is Paris.", "Bananas are yellow.", "Paris hosts the Louvre."]
HAPROXY_CFG = """
global
    maxconn 256
defaults
    mode http
    retries 0
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend rerank
    bind 127.0.0.1:{port}
    default_backend replicas
frontend stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
backend replicas
    balance roundrobin
    option httpchk GET /ready
    http-check expect status 200
    default-server inter 1s fall 2 rise 1
{servers}
"""


class HAProxy:
    def __init__(self, workdir: Path, backends: dict[str, int]) -> None:
        self.port, self.stats_port = free_port(), free_port()
        servers = "\n".join(f"    server {name} 127.0.0.1:{port} check" for name, port in backends.items())
        cfg = workdir / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(port=self.port, stats_port=self.stats_port, servers=servers))
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / "haproxy.txt", "w")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=self.log, stderr=subprocess.STDOUT)

    def status(self) -> dict[str, str]:
        """Each backend server's state as HAProxy sees it (UP, DOWN, ...)."""
        try:
            text = httpx.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=5).text
        except httpx.TransportError:
            return {}
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {r["svname"]: r["status"] for r in rows if r["pxname"] == "replicas" and r["svname"] != "BACKEND"}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


class SteadyLoad:
    """A few clients with keep-alive connections to the balancer, each sending a small request
    every ~0.2 s until stopped; every outcome is counted."""

    def __init__(self, url: str, clients: int = 3) -> None:
        self.url = url
        self.outcomes: Counter[str] = Counter()
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(clients)]
        for t in self.threads:
            t.start()

    def run(self, i: int) -> None:
        with httpx.Client(base_url=self.url, timeout=120) as client:
            while not self.stopped.is_set():
                try:
                    r = client.post("/v1/rerank", json={"query": f"capital of France {i}", "documents": DOCS})
                    ok = r.status_code == 200 and sorted(x["index"] for x in r.json()["results"]) == [0, 1, 2]
                    outcome = "200 full" if ok else f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
                with self.lock:
                    self.outcomes[outcome] += 1
                self.stopped.wait(0.2)

    def total(self) -> int:
        with self.lock:
            return sum(self.outcomes.values())

    def stop(self) -> Counter[str]:
        self.stopped.set()
        for t in self.threads:
            t.join(180)
        return self.outcomes


def reranks_served(p: ServerProcess) -> float:
    """Rerank requests the replica answered 200 (health checks not counted)."""
    return p.metric("rerank_requests_total", route="/v1/rerank", status="200")


# Start-up next to a busy replica on a 2-core machine took 60-220 s here. The server's own
# --startup-timeout ends a start that hangs (exit 1, with its log) before the test's waits do,
# and those before pytest's limit, so a failure shows the replica's processes and output.
STARTUP_TIMEOUT_S = 600


@pytest.mark.timeout(3 * STARTUP_TIMEOUT_S + 300)
def test_rolling_restart_behind_haproxy_loses_no_request(tiny_model: Path, tmp_path: Path):
    common = ("--drain-delay", "5", "--drain-timeout", "30", "--startup-timeout", str(STARTUP_TIMEOUT_S))
    flags = {name: (*common, *SHARED_HOST_FLAGS) for name in ("a", "b")}
    dirs = {name: tmp_path / name for name in ("a", "b")}
    for d in dirs.values():
        d.mkdir()
    replicas = {name: ServerProcess(tiny_model, d, flags[name]) for name, d in dirs.items()}
    lb = HAProxy(tmp_path, {name: p.port for name, p in replicas.items()})
    load = None
    try:
        for p in replicas.values():
            p.wait_ready(STARTUP_TIMEOUT_S + 60)
        assert wait_until(lambda: lb.status() == {"a": "UP", "b": "UP"}, 60, 0.2), lb.status()
        load = SteadyLoad(lb.url)
        assert wait_until(lambda: load.total() >= 20, 120, 0.1)

        for generation, name in enumerate(["a", "b"], start=1):
            old = replicas[name]
            served_before = reranks_served(old)
            assert served_before > 0, f"replica {name} got no traffic before its restart"
            old.proc.send_signal(signal.SIGTERM)
            assert old.proc.wait(120) == 0, old.log[-3000:]
            old.wait_gone()  # its engine processes too, as a container's stop
            old.stop()
            workdir = tmp_path / f"{name}{generation}"
            workdir.mkdir()
            new = ServerProcess(tiny_model, workdir, flags[name], port=old.port)  # same port, as a restarted pod
            replicas[name] = new
            new.wait_ready(STARTUP_TIMEOUT_S + 60)
            assert wait_until(lambda n=name: lb.status().get(n) == "UP", 60, 0.2), lb.status()
            # back in rotation: the new replica answers the balancer's traffic
            assert wait_until(lambda p=new: reranks_served(p) >= 5, 120, 0.2)

        outcomes = load.stop()
        load = None
        print(f"\nrolling restart through HAProxy: {dict(outcomes)}")
        assert set(outcomes) == {"200 full"}, dict(outcomes)
        assert outcomes["200 full"] >= 50
    finally:
        if load is not None:
            load.stop()
        lb.stop()
        for p in replicas.values():
            p.stop()
