"""The report: median rounds, paired ratios (the same workload ran on both servers in a round), and
the tables `bench.py` prints."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rerank_bench.load import Result
from rerank_bench.servers import engine_flags
from rerank_bench.workloads import long_doc_tokens


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
    for tag in rounds:
        if not tag.startswith(("ours", "vllm")):  # a baseline revision or a variant of ours
            ratios[f"{tag} / vllm"] = paired_ratio(rounds, tag, "vllm")
            ratios[f"ours / {tag}"] = paired_ratio(rounds, "ours", tag)
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


def long_report(rounds: dict[str, list[Result]], args: argparse.Namespace) -> dict:
    """bench.py long: truncate against chunk, median rounds."""
    doc_tokens = long_doc_tokens(args.max_model_len)
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


def models_report(rounds: dict[str, list[Result]], args: argparse.Namespace) -> dict:
    """bench.py models: each run's median round, and the first model's docs/s beside a second model
    (idle, then under mixed traffic) over its docs/s served alone, per round."""
    print(
        f"\nmodel {args.model} (first) and {args.second_model} (second), {args.requests} requests a run x "
        f"{args.rounds} rounds, concurrency {args.concurrency} (each, in the mixed runs); median round by docs/s"
    )
    print("| run | docs/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|")
    for run, results in rounds.items():
        m = median_result(results).summary()
        print(f"| {run} | {m['docs/s']} | {m['p50_ms']} | {m['p99_ms']} | {m['errors']} |")
    alone = rounds["one model"]
    ratios = {
        run: sorted(a.docs_per_s / b.docs_per_s for a, b in zip(rounds[run], alone, strict=True))
        for run in ("two: first alone", "two: mixed, first")
    }
    mixed_total = sorted(
        (a.docs_per_s + b.docs_per_s) / c.docs_per_s
        for a, b, c in zip(rounds["two: mixed, first"], rounds["two: mixed, second"], alone, strict=True)
    )
    for run, values in {**ratios, "two: mixed, both together": mixed_total}.items():
        print(f"{run} / one model alone, docs/s per round: {' '.join(f'{v:.2f}' for v in values)}")
    out = {"rounds": {k: [r.summary() for r in v] for k, v in rounds.items()}, "args": vars(args)}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


def cache_report(rounds: dict[tuple[str, str], list[Result]], hit_ratios: dict[str, list[float]], args) -> dict:
    """bench.py cache: each workload with the score cache on and off, median rounds and ratios."""
    print(
        f"\nmodel {args.model}, {args.requests} requests a workload x {args.rounds} rounds, concurrency "
        f"{args.concurrency}; repeat: each request {args.repeats} times in turn; zipf: {args.zipf_queries} distinct "
        "queries, exponent 1.1; median round by docs/s"
    )
    print("| workload | cache | docs/s | p50 ms | p99 ms | hit ratio | API CPU ms/doc | docs/s on/off (per round) |")
    print("|---|---|---|---|---|---|---|---|")
    out: dict[str, dict] = {}
    for workload in dict.fromkeys(w for w, _ in rounds):
        on, off = rounds[(workload, "cache-on")], rounds[(workload, "cache-off")]
        per_round = sorted(a.docs_per_s / b.docs_per_s for a, b in zip(on, off, strict=True))
        ratio = median_result(on).docs_per_s / median_result(off).docs_per_s
        hit = sorted(hit_ratios[workload])[len(hit_ratios[workload]) // 2]
        for tag, results in (("on", on), ("off", off)):
            m = median_result(results).summary()
            cpu = api_ms_per_doc(results) if all(r.cpu_s for r in results) else float("nan")
            cells = f"{ratio:.2f} ({' '.join(f'{r:.2f}' for r in per_round)})" if tag == "on" else ""
            print(f"| {workload} | {tag} | {m['docs/s']} | {m['p50_ms']} | {m['p99_ms']} | "
                  f"{f'{hit:.0%}' if tag == 'on' else '-'} | {cpu:.3f} | {cells} |")  # fmt: skip
        out[workload] = {
            "docs/s on/off": round(ratio, 2),
            "per round": per_round,
            "hit ratio": hit,
            "API CPU ms/doc on": api_ms_per_doc(on) if all(r.cpu_s for r in on) else None,
            "API CPU ms/doc off": api_ms_per_doc(off) if all(r.cpu_s for r in off) else None,
        }
    if args.json:
        Path(args.json).write_text(json.dumps({"workloads": out, "args": vars(args)}, indent=2))
    return out


def peers_report(runs: list, args: argparse.Namespace) -> dict:
    """Per tool and server beside vLLM's (ours, each --variant, --infinity): each round's ratio to vLLM's of
    requests/s and of p50 latency, their medians and lowest; every run and the exact command lines
    in --json."""
    import statistics

    summary: dict = {"tools": {}, "runs": [vars(r) for r in runs]}
    for tool in dict.fromkeys(r.tool for r in runs):
        by_round: dict[int, dict] = {}
        for run in (r for r in runs if r.tool == tool):
            by_round.setdefault(run.round, {})[run.server] = run
        servers = list(dict.fromkeys(r.server for r in runs if r.tool == tool))
        for server in servers:
            cpu = [p[server].cpu_ms_per_request for p in by_round.values() if server in p]
            if cpu and all(cpu):
                median_cpu = {kind: statistics.median(c[kind] for c in cpu) for kind in cpu[0]}
                summary.setdefault("cpu_ms_per_request", {}).setdefault(tool, {})[server] = median_cpu
                shown = ", ".join(f"{kind} {ms:.1f}" for kind, ms in median_cpu.items() if ms)
                print(f"{tool} {server}: CPU ms per request (median over rounds): {shown}")
        for server in (s for s in servers if s != "vllm"):
            key = tool if server == "ours" else f"{tool} {server}"
            rows = [p for p in by_round.values() if {server, "vllm"} <= set(p)]
            if not rows:
                ours = [p[server].requests_per_s for p in by_round.values() if server in p]
                summary["tools"][key] = {"ours_requests_per_s": ours}
                print(f"{key}: ours alone, requests/s per round {', '.join(f'{x:.2f}' for x in ours)}")
                continue
            ratios = [p[server].requests_per_s / p["vllm"].requests_per_s for p in rows]
            p50 = [p[server].p50_ms / p["vllm"].p50_ms for p in rows]
            summary["tools"][key] = {
                "requests_per_s_ratio": ratios,
                "median": statistics.median(ratios),
                "lowest": min(ratios),
                "p50_ratio": p50,
                "failed": sum(p[server].failed + p["vllm"].failed for p in rows),
            }
            print(
                f"{key}: {server}/vLLM requests/s median {statistics.median(ratios):.2f}x (rounds "
                f"{', '.join(f'{x:.2f}' for x in ratios)}), p50 {statistics.median(p50):.2f}x"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return summary
