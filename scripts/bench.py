#!/usr/bin/env python3
"""Rerank benchmark: a seeded closed-loop workload against any rerank URL, or side by side with
vLLM's own rerank server on the same model files and engine flags.

    # one server (--pid: also its CPU time per document)
    python scripts/bench.py run --url http://127.0.0.1:8000 --requests 200 --concurrency 8
    # ours vs vLLM's own server, alternating rounds; the engine flags given go to both, and each
    # server keeps its own defaults for the rest (ours differ: see server/engine/engine_args.py); --dtype default
    # passes no dtype, so each server runs the model with its own default
    python scripts/bench.py compare --model models/micro --requests 200 --concurrency 8 --rounds 3
    # beside them, this server as it was at a git revision, and with other flags (traced: to a sink)
    python scripts/bench.py compare --model models/wide4 --dtype default --baseline 29e8c51 \
        --variant steps16k='--max-num-batched-tokens 16384' --variant traced='--otlp-traces-endpoint {otlp}'
    # both servers with 1 and with 2 API processes (ours --api-processes, vLLM's --api-server-count)
    python scripts/bench.py compare --model models/micro --requests 200 --rounds 3 --api-processes 1,2
    # this server alone, long documents (2-10 windows each) with long_document_strategy truncate vs chunk
    python scripts/bench.py long --model models/tiny --max-model-len 1024 --requests 20 --min-docs 3 --max-docs 6
    # this server with the score cache on and off: repeated requests, a Zipf query stream, nothing repeated
    python scripts/bench.py cache --model models/micro --requests 80 --rounds 3
    # the peers' own load generators, each server with its defaults, rounds alternating: vLLM's
    # `bench serve` (vllm-rerank backend, random-rerank data) and AIPerf (Cohere and TEI rankings)
    python scripts/bench.py peers --model models/tiny --dtype default --docs 16 --doc-tokens 128 \
        --concurrency 4 --requests 400 --rounds 5 --tools vllm-bench,aiperf-cohere,aiperf-tei
    # one model alone vs beside a second on one server: each one's docs/s alone and under mixed traffic
    python scripts/bench.py models --model models/tiny --second-model models/tiny --requests 40 --rounds 3
    # priority lanes: an interactive client (8 documents a request) alone, then under 6 bulk clients'
    # flood (64 documents a request) at priority 0 (no lanes) and at priority 10 (lanes), both dialects
    python scripts/bench.py lanes --model models/tiny --dtype default --requests 200 --rounds 3
    # the same with an admission budget below what 8 bulk clients want: interactive never refused
    python scripts/bench.py lanes --model models/tiny --dtype default --bulk-clients 8 \
        --ours-flags '--max-pairs-in-flight 384 --max-documents 256'
    # curves: documents/s and p50/p99 per shape (documents per request x --random-input-len, a
    # document half of it) under vLLM's `bench serve`, ours vs vLLM's server (and Infinity), beside
    # the engine alone (server/engine/vllm_engine.py with the prompts built beforehand: the limit); PNG + JSON
    python scripts/bench.py curves --model models/tiny --dtype default --docs 1,4,16,64,256,1000 \
        --input-lens 128,512,2048 --rounds 3 --png curves.png --json curves.json
    # soak: two API processes and a shared Redis cache under mixed traffic (both dialects, repeats,
    # chunked documents, hang-ups, 429 bursts, Redis restarted midway); RSS, FDs, threads sampled;
    # writes soak.json and soak.png (scripts/rerank_bench/soak.py)
    python scripts/bench.py soak --model models/tiny --max-model-len 512 --minutes 20 --out soak

Workload (seeded, repeatable): queries of 10-30 tokens, documents of 100-500 tokens, 20-100
documents a request. Reports docs/s, requests/s, p50/p95/p99 latency, errors and the
prefix-cache hit rate (ours: usage.cached_tokens; vLLM: its prefix-cache counters), and CPU
time per document of each server's processes by kind: API (HTTP) processes, engine core, worker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # rerank_bench, beside this file

from rerank_bench import curves as curve_tools
from rerank_bench import lanes as lane_tools
from rerank_bench import peers as peer_tools
from rerank_bench import workloads
from rerank_bench.load import Result, cpu_by_kind, run_load, score_cache_counters
from rerank_bench.report import cache_report, long_report, models_report, peers_report, report
from rerank_bench.servers import OtlpSink, check_same_scores, start_servers, stop
from rerank_bench.soak import run as soak


def more_of_ours(args: argparse.Namespace, otlp_url: str | None = None) -> list[tuple[str, int, str, list[str]]]:
    """This server beside the others, as start_servers' specs: as it was at each --baseline git
    revision (tag at_REV), and with each --variant's flags or environment ({otlp}: `otlp_url`)."""
    specs = [(f"ours@{rev}", 1, f"at_{rev}", []) for rev in args.baseline]
    for variant in args.variant:
        tag, _, flags = variant.partition("=")
        specs.append(("ours", 1, tag, (flags.replace("{otlp}", otlp_url) if otlp_url else flags).split()))
    return specs


def compare(args: argparse.Namespace) -> dict:
    docs, doc_tokens = (args.min_docs, args.max_docs), (args.min_doc_tokens, args.max_doc_tokens)
    # A fresh workload each round (the same for every server): a repeated one would be served
    # from the prefix cache whole, which no real search traffic is.
    rounds_workloads = [
        workloads.search(args.requests, args.seed + 1000 * (r + 1), docs, doc_tokens) for r in range(args.rounds)
    ]
    warmup = workloads.search(max(4, args.concurrency), args.seed, docs, doc_tokens)
    counts = sorted({int(n) for n in args.api_processes.split(",")} | {1})
    sink = None
    if any("{otlp}" in variant for variant in args.variant):  # a collector for traced variants
        sink = OtlpSink()
    specs: list = [(kind, n) for n in counts for kind in ("vllm", "ours")]
    specs += more_of_ours(args, sink.url if sink else None)
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
                    res = asyncio.run(run_load(urls[tag], rounds_workloads[r], args.concurrency, tag, pid=pid))
                    rounds[tag].append(res)
                    print(f"round {r + 1} {tag}: {res.summary()}", flush=True)
        finally:
            stop(servers)
    return report(rounds, args, diff)


def several_models(args: argparse.Namespace) -> dict:
    """One model served alone, and the same model beside a second one on one server (each on its own
    engine): each model's docs/s alone and under mixed traffic (both at once, `--concurrency` each),
    side by side, rounds alternating; a fresh workload for every run (nothing from the prefix cache)."""
    docs, doc_tokens = (args.min_docs, args.max_docs), (args.min_doc_tokens, args.max_doc_tokens)
    second = ["--model", args.second_model, "--served-model-name", "second"]
    specs = [("ours", 1, "one", []), ("ours", 1, "two", second)]
    runs = ("one model", "two: first alone", "two: second alone", "two: mixed, first", "two: mixed, second")
    rounds: dict[str, list[Result]] = {run: [] for run in runs}
    with tempfile.TemporaryDirectory(prefix="rerank-bench-") as tmp:
        servers = start_servers(args, Path(tmp), specs, ours_only=True)
        try:
            one, two = servers["one"][1], servers["two"][1]
            warmup = workloads.search(max(4, args.concurrency), args.seed, docs, doc_tokens)
            for url, name in ((one, "reranker"), (two, "reranker"), (two, "second")):
                asyncio.run(run_load(url, warmup.for_model(name), args.concurrency, "warm-up"))
            for r in range(args.rounds):
                seed = args.seed + 1000 * (r + 1)
                load = [workloads.search(args.requests, seed + k, docs, doc_tokens) for k in range(5)]
                alone = [
                    ("one model", one, load[0].for_model("reranker")),
                    ("two: first alone", two, load[1].for_model("reranker")),
                    ("two: second alone", two, load[2].for_model("second")),
                ]
                for run, url, workload in alone if r % 2 == 0 else alone[::-1]:
                    rounds[run].append(asyncio.run(run_load(url, workload, args.concurrency, run)))

                async def mixed(first: workloads.Workload, other: workloads.Workload) -> tuple[Result, Result]:
                    return await asyncio.gather(
                        run_load(two, first, args.concurrency, "two: mixed, first"),
                        run_load(two, other, args.concurrency, "two: mixed, second"),
                    )

                a, b = asyncio.run(mixed(load[3].for_model("reranker"), load[4].for_model("second")))
                rounds[a.name].append(a)
                rounds[b.name].append(b)
                for run in runs:
                    print(f"round {r + 1} {run}: {rounds[run][-1].summary()}", flush=True)
        finally:
            stop(servers)
    return models_report(rounds, args)


def long_documents(args: argparse.Namespace) -> dict:
    """This server alone: the same long documents with long_document_strategy truncate and chunk."""
    docs = (args.min_docs, args.max_docs)
    rounds: dict[str, list[Result]] = {"truncate": [], "chunk": []}
    with tempfile.TemporaryDirectory(prefix="rerank-bench-") as tmp:
        servers = start_servers(args, Path(tmp), [("ours", 1)])
        try:
            proc, url = servers["ours"]
            warmup = workloads.long(2, args.seed, docs, args.max_model_len)
            asyncio.run(run_load(url, warmup.with_strategy("chunk"), args.concurrency, "warm-up"))
            for r in range(args.rounds):
                workload = workloads.long(args.requests, args.seed + 1000 * (r + 1), docs, args.max_model_len)
                for strategy in ("truncate", "chunk") if r % 2 == 0 else ("chunk", "truncate"):
                    res = asyncio.run(
                        run_load(url, workload.with_strategy(strategy), args.concurrency, strategy, pid=proc.pid)
                    )
                    rounds[strategy].append(res)
                    print(f"round {r + 1} {strategy}: {res.summary()}", flush=True)
        finally:
            stop(servers)
    return long_report(rounds, args)


def cache(args: argparse.Namespace) -> dict:
    """This server with the score cache on (its default) and off (--score-cache-size 0), side by
    side: repeated requests, a Zipf query stream, and nothing repeated (what the lookup costs)."""
    docs, doc_tokens = (args.min_docs, args.max_docs), (args.min_doc_tokens, args.max_doc_tokens)
    specs = [("ours", 1, "cache-on", []), ("ours", 1, "cache-off", ["--score-cache-size", "0"])]
    rounds: dict[tuple[str, str], list[Result]] = {}
    hit_ratios: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="rerank-bench-") as tmp:
        servers = start_servers(args, Path(tmp), specs, ours_only=True)
        try:
            warmup = workloads.search(max(4, args.concurrency), args.seed, docs, doc_tokens)
            for _, url in servers.values():
                asyncio.run(run_load(url, warmup, args.concurrency, "warm-up"))
            for r in range(args.rounds):
                seed = args.seed + 1000 * (r + 1)  # fresh requests every round: nothing cached from before
                round_workloads = {
                    "repeat": workloads.repeat(args.requests // args.repeats, args.repeats, seed, docs, doc_tokens),
                    "zipf": workloads.zipf(args.requests, args.zipf_queries, seed + 1, docs, doc_tokens),
                    "unique": workloads.search(args.requests, seed + 2, docs, doc_tokens),
                }
                for name, workload in round_workloads.items():
                    for tag in ("cache-on", "cache-off") if r % 2 == 0 else ("cache-off", "cache-on"):
                        proc, url = servers[tag]
                        before = asyncio.run(score_cache_counters(url))
                        res = asyncio.run(run_load(url, workload, args.concurrency, tag, pid=proc.pid))
                        after = asyncio.run(score_cache_counters(url))
                        rounds.setdefault((name, tag), []).append(res)
                        if tag == "cache-on" and before and after:
                            hits, misses = after[0] - before[0], after[1] - before[1]
                            hit_ratios.setdefault(name, []).append(hits / (hits + misses) if hits + misses else 0.0)
                        print(f"round {r + 1} {name} {tag}: {res.summary()}", flush=True)
        finally:
            stop(servers)
    return cache_report(rounds, hit_ratios, args)


def peers(args: argparse.Namespace) -> dict:
    """Both servers under the peers' own load generators: per tool and round, the same seed (the same
    requests) for both, a fresh one each round; the order of the servers alternates."""
    tools = args.tools.split(",")
    runs: list[peer_tools.PeerRun] = []
    with tempfile.TemporaryDirectory(prefix="rerank-bench-") as tmp:
        workdir = Path(tmp)
        specs: list = [("vllm", 1), ("ours", 1), *more_of_ours(args)]  # each against vLLM's
        if args.infinity:  # a third server: Infinity on a sequence-classification copy of the model
            specs.append(("infinity", 1, "infinity", []))
        servers = start_servers(args, workdir, specs)
        try:
            for r in range(args.rounds + 1):  # round 0 warms all up (compile, caches) and is not kept
                # rotate the order, so that drift on a noisy machine hits all
                order = list(servers)[r % len(servers) :] + list(servers)[: r % len(servers)]
                for tool in tools:
                    for tag in order:
                        if tool == "aiperf-tei" and tag == "vllm":
                            continue  # vLLM's server does not take TEI's shape
                        if tool.startswith("aiperf") and tag == "infinity":
                            continue  # Infinity serves neither /v2/rerank (AIPerf's Cohere path) nor TEI's shape
                        # per round and tool a seed of its own, the same for both servers: no tool's documents
                        # repeat another's (this server's score cache would answer them)
                        (proc, url), seed = servers[tag], args.seed + 1000 * r + tools.index(tool)
                        profile = None
                        if args.profile and r == 1 and tool == "vllm-bench":
                            profile = peer_tools.Profile(proc.pid, Path(args.profile) / f"{tag}.raw.txt")
                        before = cpu_by_kind(proc.pid)
                        if tool == "vllm-bench":
                            endpoint = "/rerank" if tag == "infinity" else "/v1/rerank"
                            run = peer_tools.vllm_bench(tag, url, endpoint, args, r, seed, workdir)
                        else:
                            endpoint = {"aiperf-cohere": "cohere_rankings", "aiperf-tei": "hf_tei_rankings"}[tool]
                            run = peer_tools.aiperf(tag, url, endpoint, args, r, seed, workdir)
                        after = cpu_by_kind(proc.pid)
                        if before and after:
                            run.cpu_ms_per_request = {
                                kind: round(1000 * (after[kind] - before[kind]) / args.requests, 2) for kind in after
                            }
                        if profile is not None:
                            print(profile.stop(), flush=True)
                        print(f"round {r} {tool} {tag}: {run.requests_per_s:.2f} req/s p50 {run.p50_ms:.0f} ms "
                              f"failed {run.failed} CPU ms/request {run.cpu_ms_per_request}", flush=True)  # fmt: skip
                        if r > 0 and profile is None:  # the warm-up and a profiled run are not measurements
                            runs.append(run)
        finally:
            stop(servers)
    return peers_report(runs, args)


def lanes(args: argparse.Namespace) -> dict:
    """This server alone: the interactive client alone, and under the bulk flood without and with
    lanes, rounds alternating the two floods' order; medians over rounds and every round's numbers."""
    alone, no_lanes = "alone", "flood, no lanes (all priority 0)"
    with_lanes = f"flood, lanes (bulk at priority {args.bulk_priority})"
    phases = {alone: (0, None), no_lanes: (args.bulk_clients, 0), with_lanes: (args.bulk_clients, args.bulk_priority)}
    rounds: dict[str, list[dict]] = {name: [] for name in phases}
    with tempfile.TemporaryDirectory(prefix="rerank-bench-") as tmp:
        servers = start_servers(args, Path(tmp), [("ours", 1)])
        try:
            url = servers["ours"][1]
            asyncio.run(lane_tools.phase(url, args.seed, 10, args.interactive_docs, 0, args.bulk_docs, None))
            for r in range(args.rounds):
                floods = [no_lanes, with_lanes] if r % 2 == 0 else [with_lanes, no_lanes]
                for name in (alone, *floods):
                    clients, priority = phases[name]
                    seed = args.seed + 1000 * (r + 1) + len(rounds[name])
                    result = asyncio.run(
                        lane_tools.phase(
                            url, seed, args.requests, args.interactive_docs, clients, args.bulk_docs, priority
                        )
                    )
                    rounds[name].append(result)
                    print(f"round {r + 1} {name}: {json.dumps(result)}", flush=True)
        finally:
            stop(servers)
    summary = {name: lane_tools.medians(results) for name, results in rounds.items()}
    print(json.dumps({"medians": summary}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"medians": summary, "rounds": rounds}, indent=2))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "compare", "long", "cache", "soak", "peers", "models", "lanes", "curves"):
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
                "--baseline",
                action="append",
                default=[],
                help="compare, peers: also this server at this git revision (tag at_REV), same flags (repeatable)",
            )
            p.add_argument(
                "--variant",
                action="append",
                default=[],
                help="compare, peers: also this server with more flags, TAG='--flag value ...' (repeatable; TAG "
                "without '-'); NAME=VALUE among them sets that environment variable for it; compare: {otlp} in "
                "the flags: the URL of an OTLP/HTTP sink the benchmark runs",
            )
            p.add_argument(
                "--api-processes",
                default="1",
                help="compare: API processes, comma-separated (1,2: each server with 1 and with 2; ours "
                "--api-processes N, vLLM's --api-server-count N)",
            )
            p.add_argument(
                "--kv-cache-gib", type=float, default=4, help="CPU: KV cache of each server (whole GiB but for cache)"
            )
            p.add_argument("--repeats", type=int, default=4, help="cache: times each request of `repeat` is sent")
            p.add_argument("--zipf-queries", type=int, default=50, help="cache: distinct queries of `zipf`")
            p.add_argument("--gpu-memory-utilization", type=float, default=0.4, help="GPU: each server's share")
        if name == "lanes":
            p.add_argument("--interactive-docs", type=int, default=8, help="documents of each interactive request")
            p.add_argument("--bulk-clients", type=int, default=6, help="bulk clients flooding without pause")
            p.add_argument("--bulk-docs", type=int, default=64, help="documents of each bulk request")
            p.add_argument("--bulk-priority", type=int, default=10, help="the bulk clients' priority with lanes")
        if name == "curves":
            p.add_argument("--docs", default="1,4,16,64,256,1000", help="documents per request, comma-separated")
            p.add_argument(
                "--input-lens", default="128,512,2048", help="vLLM bench's --random-input-len (a document: half)"
            )
            p.add_argument("--shapes", default="", help="more shapes besides the grid: DOCSxINPUT_LEN,...")
            p.add_argument("--max-request-tokens", type=int, default=65536, help="skip larger shapes")
            p.add_argument("--doc-tokens-per-run", type=int, default=400_000, help="sizes each run's requests")
            p.add_argument("--min-requests", type=int, default=16)
            p.add_argument("--max-requests", type=int, default=600)
            p.add_argument("--infinity", help="a third server: Infinity's infinity_emb executable (its own venv)")
            p.add_argument("--infinity-model", help="what Infinity serves: a sequence-classification copy of --model")
            p.add_argument("--no-engine-alone", action="store_true", help="skip the engine-alone limit")
            p.add_argument("--png", help="draw the curves here")
        if name == "models":
            p.add_argument("--second-model", required=True, help="the model served beside --model")
        if name == "peers":
            p.add_argument("--tools", default="vllm-bench,aiperf-cohere,aiperf-tei", help="comma-separated")
            p.add_argument("--docs", type=int, default=16, help="documents per request")
            p.add_argument(
                "--doc-tokens", type=int, default=128, help="vllm-bench: --random-input-len; aiperf: each passage"
            )
            p.add_argument("--query-tokens", type=int, default=64, help="aiperf: the query's tokens")
            p.add_argument(
                "--profile", help="a directory: py-spy samples each server's processes in round 1's vllm-bench"
            )
            p.add_argument(
                "--infinity", help="a third server: Infinity's infinity_emb executable (its own venv), vllm-bench only"
            )
            p.add_argument("--infinity-model", help="what Infinity serves: a sequence-classification copy of --model")
            p.add_argument("--aiperf", default=str(Path(__file__).resolve().parent.parent / ".venv-aiperf/bin/aiperf"))
        if name == "soak":
            p.add_argument("--minutes", type=float, default=20)
            p.add_argument("--window-minutes", type=float, default=15, help="judge growth over the last ... minutes")
            p.add_argument("--max-growth", type=float, default=0.05, help="most RSS/FD growth over the window")
            p.add_argument("--burst-size", type=int, default=8, help="requests in each minute's burst")
            p.add_argument("--burst-docs", type=int, default=64, help="documents in each (also --max-documents)")
            p.add_argument("--max-pairs-in-flight", type=int, default=192, help="the server's admission limit")
            p.add_argument("--out", default="soak", help="directory for soak.json, soak.png and the logs")
            p.add_argument(
                "--allocator",
                choices=("tcmalloc", "glibc"),
                default="tcmalloc",
                help="the server's malloc: tcmalloc preloaded (as the image and scripts/serve.sh run it) or glibc's",
            )
            p.add_argument("--judge", action="store_true", help="judge the finished run in --out again; run nothing")
            p.add_argument("--drain-wait", type=float, default=120, help="seconds the server gets to exit on SIGTERM")
    args = parser.parse_args()
    if args.command == "run":
        workload = workloads.search(args.requests, args.seed, (args.min_docs, args.max_docs),
                                    (args.min_doc_tokens, args.max_doc_tokens))  # fmt: skip
        result = asyncio.run(run_load(args.url, workload, args.concurrency, args.url, args.api_key, args.pid))
        print(json.dumps(result.summary()))
        if args.json:
            Path(args.json).write_text(json.dumps(result.summary(), indent=2))
    elif args.command == "models":
        several_models(args)
    elif args.command == "lanes":
        lanes(args)
    elif args.command == "curves":
        curve_tools.run(args)
    elif args.command == "long":
        long_documents(args)
    elif args.command == "cache":
        cache(args)
    elif args.command == "peers":
        peers(args)
    elif args.command == "soak":
        summary = soak(args)
        print(json.dumps(summary, indent=2))
        raise SystemExit(0 if summary["passed"] else 1)
    else:
        compare(args)


if __name__ == "__main__":
    main()
