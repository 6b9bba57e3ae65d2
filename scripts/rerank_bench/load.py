"""The closed-loop client: `concurrency` clients against one rerank URL, and what the run cost the
server's processes in CPU time, by kind (API processes, engine core, worker)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

from rerank_bench.workloads import Workload


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


async def metric_sums(url: str, *names: str) -> dict[str, float] | None:
    """The sum of each named metric's samples on a server's /metrics page (None: no page)."""
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    try:
        async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
            text = await response.text()
    except aiohttp.ClientError:
        return None
    sums = dict.fromkeys(names, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in sums:
                sums[sample.name] += sample.value
    return sums


async def vllm_cache_counters(url: str) -> tuple[float, float] | None:
    """(prefix-cache hit tokens, queried tokens) from a vLLM /metrics page, if it has them."""
    found = await metric_sums(url, "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total")
    if not found or not found["vllm:prefix_cache_queries_total"]:
        return None
    return found["vllm:prefix_cache_hits_total"], found["vllm:prefix_cache_queries_total"]


async def score_cache_counters(url: str) -> tuple[float, float] | None:
    """(hits, misses) of this server's score cache, in pairs, from its /metrics page."""
    found = await metric_sums(url, "rerank_score_cache_hits_total", "rerank_score_cache_misses_total")
    return None if found is None else (found["rerank_score_cache_hits_total"], found["rerank_score_cache_misses_total"])
