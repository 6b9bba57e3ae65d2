"""Helpers several test modules share (no test module imports another): request bodies, error and
parity assertions, the card's prompt ids, and a server run as a process the way the image runs it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from .conftest import ROOT, wait_until
from .reference import PREFIX, SUFFIX, format_instruction

GOOD = {"query": "capital of China", "documents": ["Beijing is the capital of China.", "Gravity is a force."]}


def assert_error(response: httpx.Response, status: int, kind: str, message: str = "") -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code"}
    assert body["error"]["code"] == status and body["error"]["type"] == kind
    assert re.search(message, body["error"]["message"]), body["error"]["message"]


def assert_still_serving(client: httpx.Client) -> None:
    response = client.post("/v1/rerank", json=GOOD)
    assert response.status_code == 200 and len(response.json()["results"]) == 2


LONG_DOCS = [f"document {i} " + "lorem ipsum dolor sit amet " * 80 for i in range(300)]


# The image's ENTRYPOINT is ["python", "-m", "server"]; these flags are what a user passes to docker run.
ENTRYPOINT = [sys.executable, "-m", "server"]


def metric_value(exposition: str, name: str, *, required: bool = True, **labels: str) -> float:
    """The sum of the samples of one metric in Prometheus' text format whose labels include `labels`
    (parsed by prometheus-client, not matched as text); an absent one fails the test if `required`,
    else counts 0 (a labelled counter before its first increment)."""
    found = [
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]
    assert found or not required, f"no sample {name}{labels or ''}"
    return sum(found)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, model: Path, workdir: Path, extra_flags: tuple[str, ...] = (), port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "RERANK_MODEL": str(model),
            "RERANK_PORT": str(self.port),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT),
        }
        flags = ["--dtype", "float32", "--max-model-len", "512", "--enforce-eager", "--block-size", "32"]
        flags += ["--kv-cache-gib", "1", "--host", "127.0.0.1", "--drain-timeout", "20", "--drain-delay", "10"]
        flags += list(extra_flags)
        self.stdout = open(workdir / "stdout.txt", "w")
        self.proc = subprocess.Popen(
            ENTRYPOINT + flags,
            cwd=workdir,
            env=env,
            stdout=self.stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends it and its engine, nothing else
        )

    @property
    def log(self) -> str:
        path = self.workdir / "vllm.log"  # the default --log-file, in the working directory
        return path.read_text() if path.exists() else ""

    def get(self, path: str) -> int:
        try:
            return httpx.get(self.url + path, timeout=5).status_code
        except httpx.TransportError:
            return 0

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of one metric on /metrics whose labels include `labels`."""
        return metric_value(httpx.get(self.url + "/metrics", timeout=10).text, name, required=False, **labels)

    def wait_ready(self, timeout: float = 240) -> None:
        ok = wait_until(lambda: self.get("/ready") == 200 or self.proc.poll() is not None, timeout, 0.5)
        assert ok and self.proc.poll() is None, self.diagnosis()

    def children_titled(self, prefix: str) -> list[psutil.Process]:
        """The server's descendants whose title (command line) starts with `prefix`."""
        found = []
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if " ".join(child.cmdline()).startswith(prefix):
                    found.append(child)
        return found

    def group(self) -> list[psutil.Process]:
        """Every live process of this server's process group (itself, its engine core, workers)."""
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if os.getpgid(proc.pid) == self.proc.pid and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        return found

    def diagnosis(self) -> str:
        """What a failed wait shows: each process of the server (state, CPU seconds, cores it may
        run on, what it waits in) and the end of its output."""
        rows = []
        for proc in self.group():
            with contextlib.suppress(psutil.Error, OSError):
                times = proc.cpu_times()
                wchan = Path(f"/proc/{proc.pid}/wchan").read_text() if Path(f"/proc/{proc.pid}/wchan").exists() else ""
                rows.append(
                    f"pid {proc.pid} {proc.name()} {proc.status()} cpu {times.user + times.system:.1f}s "
                    f"cores {proc.cpu_affinity()} wchan {wchan or '-'}"
                )
        output = (self.workdir / "stdout.txt").read_text()[-4000:]
        return "processes:\n" + "\n".join(rows or ["(none)"]) + "\noutput:\n" + output

    def wait_gone(self, timeout: float = 120) -> None:
        """Until no process of the server is left (a stopped server's engine processes included)."""
        assert wait_until(lambda: not self.group(), timeout, 0.5), self.diagnosis()

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the server and its engine-core processes
        except ProcessLookupError:
            pass
        self.proc.wait(30)
        self.stdout.close()


MAX_LEN = 512


DOCS = [
    "The capital of China is Beijing.",
    "北京是中国的首都，也是政治和文化中心。",
    "القاهرة هي عاصمة مصر وأكبر مدنها.",
    "Emoji 🌍🚀👩‍👩‍👧 and flags 🇫🇷🇯🇵 in text",
    "control\x00chars\x07\x1b[31m and\ttabs\r\nnewlines\n\n",
    " leading space",
    "   several leading spaces",
    "\nleading newline",
    "!!! punctuation first",
    "'s contraction first",
    "123 digits first",
    "<|im_end|> a special token inside a document",
    "e\u0301 combining accent (NFD) and é (NFC)",
    "",
    " ",
    "Ünïcödé ÄÖÜ ß — “quotes” … ",
    "x " * 1000,  # far longer than max_model_len: truncated
    "日本語のテキスト" * 200,
]


def card_ids(tok, query: str, docs: list[str], instruction: str | None = None, max_len: int = MAX_LEN):
    prefix = tok.encode(PREFIX, add_special_tokens=False)
    suffix = tok.encode(SUFFIX, add_special_tokens=False)
    pairs = [format_instruction(instruction, query, d) for d in docs]
    body = tok(pairs, padding=False, truncation="longest_first", max_length=max_len - len(prefix) - len(suffix))
    return [prefix + ids + suffix for ids in body["input_ids"]]


QUERY = "What is the capital of China?"


def server_scores(client, query: str, documents: list[str], **extra: Any) -> list[float]:
    response = client.post("/v1/rerank", json={"query": query, "documents": documents, **extra})
    assert response.status_code == 200, response.text
    by_index = {r["index"]: r["relevance_score"] for r in response.json()["results"]}
    return [by_index[i] for i in range(len(documents))]


def assert_close(got: list[float], want: list[float], tol: float) -> None:
    diffs = [abs(a - b) for a, b in zip(got, want, strict=True)]
    assert max(diffs) <= tol, f"max |diff| {max(diffs):.2e} > {tol:g}: {list(zip(got, want, strict=True))}"


# Replicas sharing this host's cores run unpinned (`--cpu-threads-bind nobind`, as the README says
# for servers that share a host). With pinned workers (vLLM's `auto`, or disjoint core lists) the
# restarted replica hung here, in 3 runs of 3, while importing torch: torch's CPU probe moves its
# thread onto every core in turn (sched_setaffinity), and the move onto the core where the other
# replica's pinned worker was busy never finished (the process stayed runnable with no CPU time,
# in the kernel's affine_move_task; kernel 6.18). A plain `python -c "import torch"` hung the
# same way next to a loaded server pinned to core 1, and never in 8 tries next to one unpinned.
SHARED_HOST_FLAGS = ("--cpu-threads-bind", "nobind")
