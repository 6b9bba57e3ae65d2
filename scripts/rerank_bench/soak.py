"""The soak run (`bench.py soak`): hours of mixed traffic in minutes, and what the server's processes
hold meanwhile.

The server runs as operators run it for weeks: two API processes, the score cache shared through a
real redis-server, a small admission limit so that bursts get 429s. Traffic, closed-loop, all at
once: fresh search requests in both dialects, repeats of earlier ones (score-cache hits, checked
bit-identical to their first answer), chunked long documents, clients that hang up mid-request,
and every minute a burst past the admission limit; Redis is stopped and restarted midway.

Every few seconds each process of the server (supervisor, api-N, engine core, ...) has its RSS,
open file descriptors and threads sampled. The verdict: no 5xx, no lost answer (a request that got
no HTTP answer but was not hung up by the client), and each process's RSS and FDs growing less
than `--max-growth` over the last `--window-minutes` (mean of its first minute to mean of its last).
Writes soak.json and soak.png into --out.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes.util
import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rerank_bench import workloads
from rerank_bench.redis_server import RedisServer
from rerank_bench.servers import start_servers, stop

# Outcomes of one request: HTTP statuses as text, "hung-up" (the client closed the connection on
# purpose), "lost" (no answer and not hung up: a failure), "wrong" (200 with a wrong answer).
FAILURES = ("lost", "wrong")


@dataclass
class Sample:
    t: float  # seconds since traffic started
    processes: dict[str, dict[str, float]]  # role -> {"rss_mib", "fds", "threads"}


@dataclass
class Soak:
    url: str
    pid: int  # the server's root process
    seconds: float
    burst_size: int
    burst_docs: int
    seed: int = 0
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (traffic kind, outcome)
    timeline: list[tuple[float, str, str]] = field(default_factory=list)  # (t, kind, outcome)
    samples: list[Sample] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    started: float = 0.0

    def now(self) -> float:
        return time.monotonic() - self.started

    def record(self, kind: str, outcome: str) -> None:
        self.outcomes[(kind, outcome)] += 1
        self.timeline.append((self.now(), kind, outcome))


def roles(pid: int) -> dict[str, object]:
    """The server's processes by role: supervisor, api-0, api-1, engine-core, worker, other-N."""
    import psutil

    root = psutil.Process(pid)
    found: dict[str, object] = {"supervisor": root}
    others = 0
    for child in root.children(recursive=True):
        try:
            title = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if title.startswith("rerank::api-"):
            found[title.split()[0].removeprefix("rerank::")] = child
        elif title.startswith("VLLM::EngineCore"):
            found["engine-core"] = child
        elif title.startswith("VLLM::Worker"):
            found["worker"] = child
        else:
            found[f"other-{others}"] = child
            others += 1
    return found


def sample(pid: int) -> dict[str, dict[str, float]]:
    import psutil

    out = {}
    for role, proc in roles(pid).items():
        try:
            with proc.oneshot():  # type: ignore[attr-defined]
                out[role] = {
                    "rss_mib": proc.memory_info().rss / 2**20,  # type: ignore[attr-defined]
                    "fds": proc.num_fds(),  # type: ignore[attr-defined]
                    "threads": proc.num_threads(),  # type: ignore[attr-defined]
                }
        except psutil.Error:
            continue
    return out


def check_answer(body: dict, data: object, tei: bool) -> bool:
    """A 200's answer ranks every document once."""
    n = len(body["texts"] if tei else body["documents"])
    results = data if tei else data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, list) or len(results) != n:
        return False
    return sorted(r["index"] for r in results) == list(range(n))


def scores(data: object, tei: bool) -> dict[int, float]:
    results = data if tei else data["results"]  # type: ignore[index]
    return {r["index"]: r["score" if tei else "relevance_score"] for r in results}  # type: ignore[union-attr]


async def traffic(soak: Soak, redis: RedisServer, max_model_len: int) -> None:
    import aiohttp

    rng = random.Random(soak.seed)
    deadline = soak.started + soak.seconds
    first_answers: dict[int, dict[int, float]] = {}  # repeat pool index -> scores of its first answer
    pool = workloads.Workload.make(30, soak.seed + 1, (5, 20), (50, 200)).requests

    async def post(session: aiohttp.ClientSession, kind: str, path: str, body: dict, tei: bool = False) -> object:
        try:
            async with session.post(soak.url + path, json=body) as response:
                data = await response.json(content_type=None)
                status = response.status
        except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError):
            soak.record(kind, "lost")
            return None
        if status == 200 and not check_answer(body, data, tei):
            soak.record(kind, "wrong")
            return None
        soak.record(kind, str(status))
        return data if status == 200 else None

    async def search(session: aiohttp.ClientSession, tei: bool) -> None:
        kind = "tei" if tei else "search"
        while time.monotonic() < deadline:
            body = workloads.Workload.make(1, rng.randrange(2**31), (5, 30), (50, 300)).requests[0]
            if tei:
                body = {"query": body["query"], "texts": body["documents"]}
            await post(session, kind, "/rerank" if tei else "/v1/rerank", body, tei)

    async def repeat(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            i = rng.randrange(len(pool))
            data = await post(session, "repeat", "/v2/rerank", pool[i])
            if data is None:
                continue
            got = scores(data, False)
            if i not in first_answers:
                first_answers[i] = got
            elif got != first_answers[i]:  # the exact cache: bit-identical, or it is wrong
                soak.record("repeat", "wrong")

    async def chunked(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            doc_tokens = workloads.long_doc_tokens(max_model_len)
            body = workloads.Workload.make(1, rng.randrange(2**31), (1, 3), doc_tokens).requests[0]
            await post(session, "chunked", "/v1/rerank", {**body, "long_document_strategy": "chunk"})
            await asyncio.sleep(1)

    async def hang_up(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            body = workloads.Workload.make(1, rng.randrange(2**31), (20, 40), (200, 400)).requests[0]
            try:
                async with asyncio.timeout(rng.uniform(0.05, 0.5)):
                    async with session.post(soak.url + "/v1/rerank", json=body) as response:
                        await response.read()
                        soak.record("hang-up", str(response.status))  # answered before the client gave up
            except TimeoutError:
                soak.record("hang-up", "hung-up")
            except aiohttp.ClientError:
                soak.record("hang-up", "lost")
            await asyncio.sleep(0.5)

    async def bursts(session: aiohttp.ClientSession) -> None:
        while time.monotonic() + 60 < deadline:
            await asyncio.sleep(min(60, deadline - time.monotonic()))
            soak.events.append((soak.now(), "burst"))
            body = workloads.Workload.make(
                soak.burst_size, rng.randrange(2**31), (soak.burst_docs, soak.burst_docs), (50, 100)
            ).requests
            await asyncio.gather(*(post(session, "burst", "/v1/rerank", b) for b in body))

    async def restart_redis() -> None:
        await asyncio.sleep(soak.seconds / 2)
        soak.events.append((soak.now(), "redis stopped"))
        await asyncio.to_thread(redis.stop)
        await asyncio.sleep(min(30, soak.seconds / 10))
        await asyncio.to_thread(redis.start)
        soak.events.append((soak.now(), "redis started"))

    async def sampler() -> None:
        while time.monotonic() < deadline:
            soak.samples.append(Sample(soak.now(), await asyncio.to_thread(sample, soak.pid)))
            await asyncio.sleep(soak_interval)

    soak_interval = max(1.0, min(5.0, soak.seconds / 200))
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(
            search(session, tei=False),
            search(session, tei=False),
            search(session, tei=True),
            repeat(session),
            chunked(session),
            hang_up(session),
            bursts(session),
            restart_redis(),
            sampler(),
        )
    soak.samples.append(Sample(soak.now(), sample(soak.pid)))


def growth(samples: list[Sample], role: str, key: str, window_s: float) -> float | None:
    """Relative growth of one process's `key` over the last `window_s`: the least-squares trend
    across the window, times its length, over the window's mean (None: too few samples). A trend,
    not first against last: open FDs swing by ten with the client connections of the moment, and
    a leak shows as a slope under that noise."""
    end = samples[-1].t
    points = [(s.t, s.processes[role][key]) for s in samples if s.t >= end - window_s and role in s.processes]
    if len(points) < 3:
        return None
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if not spread or not mean_v:
        return None
    slope = sum((t - mean_t) * (v - mean_v) for t, v in points) / spread
    return slope * (points[-1][0] - points[0][0]) / mean_v


def summarize(soak: Soak, window_s: float, max_growth: float) -> dict:
    by_kind: dict[str, dict[str, int]] = {}
    for (kind, outcome), count in sorted(soak.outcomes.items()):
        by_kind.setdefault(kind, {})[outcome] = count
    totals: Counter[str] = Counter()
    for (_, outcome), count in soak.outcomes.items():
        totals[outcome] += count
    server_errors = sum(count for outcome, count in totals.items() if outcome.isdigit() and int(outcome) >= 500)
    process_roles = sorted({role for s in soak.samples for role in s.processes})
    processes = {}
    end = soak.samples[-1].t
    for role in process_roles:
        window = [s.processes[role] for s in soak.samples if s.t >= end - window_s and role in s.processes]
        processes[role] = {
            **{
                f"{key}_{stat.__name__}": round(stat(p[key] for p in window), 1)
                for key in ("rss_mib", "fds", "threads")
                for stat in (min, max)
            },
            **{f"{key}_growth": growth(soak.samples, role, key, window_s) for key in ("rss_mib", "fds", "threads")},
        }
    judged = ("rss_mib_growth", "fds_growth")
    grown = {
        role: {k: v for k, v in p.items() if k in judged and v is not None and v >= max_growth}
        for role, p in processes.items()
    }
    grown = {role: g for role, g in grown.items() if g}
    failures = {outcome: totals[outcome] for outcome in FAILURES if totals[outcome]}
    return {
        "seconds": round(soak.seconds),
        "window_seconds": round(window_s),
        "requests": sum(totals.values()),
        "outcomes": dict(totals),
        "by_kind": by_kind,
        "server_errors": server_errors,
        "failures": failures,
        "events": [{"t": round(t, 1), "event": e} for t, e in soak.events],
        "processes": processes,
        "grown": grown,
        "passed": server_errors == 0 and not failures and not grown,
    }


def plot(soak: Soak, path: Path, window_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(11, 13), sharex=True)
    roles_seen = sorted({role for s in soak.samples for role in s.processes if not role.startswith("other")})
    for ax, key, label in zip(axes, ("rss_mib", "fds", "threads"), ("RSS (MiB)", "open FDs", "threads"), strict=False):
        for role in roles_seen:
            points = [(s.t / 60, s.processes[role][key]) for s in soak.samples if role in s.processes]
            ax.plot([p[0] for p in points], [p[1] for p in points], label=role)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper left", fontsize=8, ncol=3)
    bucket = 30.0
    counts: dict[str, Counter[int]] = {}
    for t, _, outcome in soak.timeline:
        name = outcome if outcome in ("200", "429", "hung-up") else "other"
        counts.setdefault(name, Counter())[int(t // bucket)] += 1
    full = int(soak.seconds // bucket)  # the last, partial bucket left out
    for name, counter in sorted(counts.items()):
        xs = [x for x in sorted(counter) if x < full]
        axes[3].plot([(x + 0.5) * bucket / 60 for x in xs], [counter[x] / bucket for x in xs], label=name)
    axes[3].set_ylabel("requests/s by outcome")
    axes[3].set_xlabel("minutes")
    axes[3].legend(loc="upper left", fontsize=8)
    axes[3].grid(alpha=0.3)
    end = soak.samples[-1].t / 60 if soak.samples else soak.seconds / 60
    for ax in axes:
        ax.axvspan(max(0, end - window_s / 60), end, color="0.9", zorder=0)
        for t, event in soak.events:
            if event.startswith("redis"):
                ax.axvline(t / 60, color="red", linestyle="--", linewidth=0.8)
    fig.suptitle("soak: two API processes, shared score cache (red: Redis stopped/started; grey: the window judged)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def judge(out: Path, window_s: float, max_growth: float) -> dict:
    """A finished run's verdict again from its files (another window or threshold, or a new
    judge): soak.json's outcomes, soak-samples.json's samples; soak.json is rewritten."""
    summary = json.loads((out / "soak.json").read_text())
    soak = Soak("", 0, summary["seconds"], 0, 0)
    for kind, outcomes in summary["by_kind"].items():
        for outcome, count in outcomes.items():
            soak.outcomes[(kind, outcome)] = count
    soak.samples = [Sample(x["t"], x["processes"]) for x in json.loads((out / "soak-samples.json").read_text())]
    soak.events = [(e["t"], e["event"]) for e in summary["events"]]
    judged = summarize(soak, window_s, max_growth)
    for key in ("server_exit_code", "allocator"):
        judged[key] = summary.get(key)
    judged["passed"] = judged["passed"] and summary.get("server_exit_code") == 0
    (out / "soak.json").write_text(json.dumps(judged, indent=2))
    return judged


def run(args: argparse.Namespace) -> dict:
    """Start Redis and the server, soak it, write soak.json and soak.png; the summary."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seconds = args.minutes * 60
    window_s = min(args.window_minutes * 60, seconds * 0.75)
    if args.judge:
        return judge(out, window_s, args.max_growth)
    if args.allocator == "tcmalloc":  # as the image and scripts/serve.sh run the server
        lib = ctypes.util.find_library("tcmalloc_minimal")
        if lib is None:
            raise SystemExit("--allocator tcmalloc: no libtcmalloc_minimal (Debian: apt install libtcmalloc-minimal4)")
        os.environ["LD_PRELOAD"] = lib
    else:
        os.environ.pop("LD_PRELOAD", None)
    redis = RedisServer(out)
    redis.start()
    extra = [
        "--score-cache-url", redis.url,
        "--max-documents", str(args.burst_docs),
        "--max-pairs-in-flight", str(args.max_pairs_in_flight),
        "--long-document-strategy", "truncate",
    ]  # fmt: skip
    try:
        servers = start_servers(args, out, [("ours", 2, "soak", extra)], ours_only=True)
        try:
            proc, url = servers["soak"]
            soak = Soak(url, proc.pid, seconds, args.burst_size, args.burst_docs, args.seed)
            soak.started = time.monotonic()
            asyncio.run(traffic(soak, redis, args.max_model_len))
        finally:
            # SIGTERM to the server's own process, as `docker stop` and Kubernetes send it: it drains
            # and exits 0 (a signal to the whole process group would stop vLLM's engine core first).
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(args.drain_wait)
            except subprocess.TimeoutExpired:
                pass
            stop(servers)
    finally:
        redis.stop()
    summary = summarize(soak, window_s, args.max_growth)
    summary["server_exit_code"] = proc.returncode
    summary["allocator"] = args.allocator
    summary["passed"] = summary["passed"] and proc.returncode == 0
    (out / "soak.json").write_text(json.dumps(summary, indent=2))
    (out / "soak-samples.json").write_text(
        json.dumps([{"t": round(s.t, 1), "processes": s.processes} for s in soak.samples])
    )
    plot(soak, out / "soak.png", window_s)
    return summary
