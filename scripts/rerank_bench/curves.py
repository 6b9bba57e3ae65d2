"""Curves: how each server's cost grows with documents per request and with their length, under
vLLM's own `bench serve` (vllm-rerank backend, random-rerank data), beside the engine alone.

A shape is (documents per request, vLLM bench's --random-input-len): random-rerank makes one query
of about half that length for the whole run and documents of the other half, all random tokens.
Each shape runs every server and the engine alone (rerank_bench/engine_alone.py) on the same seed,
a fresh seed each round, rounds alternating the servers' order; round 0 warms all up on the
smallest shape and is not kept. A run's requests are sized by document tokens (--doc-tokens-per-run)
within [--min-requests, --max-requests], so a small request's shape gets many and a large one few.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from rerank_bench import peers as peer_tools
from rerank_bench.engine_alone import READY, RESULT
from rerank_bench.load import cpu_by_kind
from rerank_bench.servers import start_servers, stop

ALONE = "engine alone"


@dataclass(frozen=True)
class Shape:
    docs: int  # documents per request
    input_len: int  # vLLM bench's --random-input-len: a document is half of it, the query the other half

    @property
    def doc_tokens(self) -> int:
        return self.input_len // 2

    @property
    def label(self) -> str:
        return f"{self.docs}x{self.input_len}"


def shapes(docs: str, input_lens: str, max_request_tokens: int, extra: str = "") -> list[Shape]:
    """Every (docs, input_len) whose documents hold at most max_request_tokens tokens a request, and
    the extra shapes (DOCSxINPUT_LEN, comma-separated), by length then documents."""
    grid = {
        Shape(d, n)
        for n in map(int, input_lens.split(","))
        for d in map(int, docs.split(","))
        if d * n // 2 <= max_request_tokens
    }
    grid |= {Shape(*map(int, s.split("x"))) for s in extra.split(",") if s}
    return sorted(grid, key=lambda s: (s.input_len, s.docs))


def requests_for(shape: Shape, args: argparse.Namespace) -> int:
    wanted = args.doc_tokens_per_run // (shape.docs * shape.doc_tokens)
    return max(args.min_requests, min(args.max_requests, wanted))


class EngineAlone:
    """rerank_bench/engine_alone.py as a process beside the servers, asked one shape at a time."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        script = Path(__file__).with_name("engine_alone.py")
        flags = ["--model", args.model, "--max-model-len", str(args.max_model_len), *args.ours_flags.split()]
        if args.dtype != "default":
            flags += ["--dtype", args.dtype]
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(int(args.kv_cache_gib))}
        self.log = open(workdir / "engine-alone.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *flags],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env,
            start_new_session=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip() == READY:
                return
        raise SystemExit(f"the engine alone did not start; see {self.log.name}")

    def run(self, shape: Shape, requests: int, seed: int, concurrency: int) -> dict[str, float]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        ask = {"docs": shape.docs, "input_len": shape.input_len, "requests": requests, "seed": seed}
        self.proc.stdin.write(json.dumps(ask | {"concurrency": concurrency}) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(RESULT):
                return json.loads(line.removeprefix(RESULT))
        raise SystemExit(f"the engine alone stopped; see {self.log.name}")

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@dataclass
class Point:
    server: str  # vllm, ours, infinity, ours' variants, or ALONE
    shape: str  # its label
    round: int
    requests_per_s: float
    docs_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: dict[str, float] | None = None


def run(args: argparse.Namespace) -> dict:
    """Every shape on every server and the engine alone; the medians, ratios and a PNG."""
    import tempfile

    todo = shapes(args.docs, args.input_lens, args.max_request_tokens, args.shapes)
    points: list[Point] = []
    with tempfile.TemporaryDirectory(prefix="rerank-curves-") as tmp:
        workdir = Path(tmp)
        specs: list = [("vllm", 1), ("ours", 1)]
        if args.infinity:
            specs.append(("infinity", 1, "infinity", []))
        servers = start_servers(args, workdir, specs)
        alone = EngineAlone(args, workdir) if not args.no_engine_alone else None
        try:
            for r in range(args.rounds + 1):  # round 0 warms all up on the first shape; not kept
                for i, shape in enumerate(todo if r else todo[:1]):
                    seed = args.seed + 1000 * r + i
                    requests = requests_for(shape, args) if r else args.min_requests
                    order = list(servers)[(r + i) % len(servers) :] + list(servers)[: (r + i) % len(servers)]
                    for tag in order:
                        proc, url = servers[tag]
                        endpoint = "/rerank" if tag == "infinity" else "/v1/rerank"
                        ns = argparse.Namespace(**vars(args) | {"docs": shape.docs, "requests": requests})
                        ns.doc_tokens = shape.input_len  # peers' name for --random-input-len
                        before, client_before = cpu_by_kind(proc.pid), client_cpu()
                        peer = peer_tools.vllm_bench(tag, url, endpoint, ns, r, seed, workdir)
                        after, client_after = cpu_by_kind(proc.pid), client_cpu()
                        cpu = None
                        if before and after:
                            cpu = {k: round(1000 * (after[k] - before[k]) / requests, 3) for k in after}
                            # the load generator's whole run (its start-up and data set-up: seconds) per request
                            cpu["client"] = round(1000 * (client_after - client_before) / requests, 3)
                        point = Point(tag, shape.label, r, peer.requests_per_s, peer.docs_per_s, peer.p50_ms,
                                      peer.p99_ms, cpu)  # fmt: skip
                        report_point(point, peer.failed, points if r else None)
                    if alone is not None:
                        res = alone.run(shape, requests, seed, args.concurrency)
                        point = Point(ALONE, shape.label, r, **res)
                        report_point(point, 0, points if r else None)
        finally:
            if alone is not None:
                alone.stop()
            stop(servers)
    summary = summarize(points, todo)
    out = {
        "shapes": [asdict(s) | {"label": s.label} for s in todo],
        "summary": summary,
        "points": [asdict(p) for p in points],
        "args": vars(args),
    }
    print(json.dumps(summary, indent=2))
    print(markdown(summary, todo))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    if args.png:
        plot(summary, todo, Path(args.png), args)
    return out


def client_cpu() -> float:
    """CPU seconds of this process's finished children: the load generator's runs (it shares the machine)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def report_point(point: Point, failed: int, keep: list[Point] | None) -> None:
    if failed:
        raise SystemExit(f"{point.server} failed {failed} requests at {point.shape}")
    if keep is not None:
        keep.append(point)
    print(f"round {point.round} {point.shape} {point.server}: {point.requests_per_s:.2f} req/s "
          f"{point.docs_per_s:.0f} docs/s p50 {point.p50_ms:.0f} ms p99 {point.p99_ms:.0f} ms "
          f"CPU ms/request {point.cpu_ms_per_request}", flush=True)  # fmt: skip


def summarize(points: list[Point], todo: list[Shape]) -> dict[str, dict[str, dict]]:
    """Per shape and server: medians over rounds, the median of each round's ratio to vLLM's server
    (paired by round) and of each round's fraction of the engine alone."""
    summary: dict[str, dict[str, dict]] = {}
    for shape in todo:
        at = [p for p in points if p.shape == shape.label]
        by_round = {(p.server, p.round): p for p in at}
        rows: dict[str, dict] = {}
        for server in dict.fromkeys(p.server for p in at):
            mine = [p for p in at if p.server == server]
            row: dict = {
                key: round(statistics.median(getattr(p, key) for p in mine), 2)
                for key in ("requests_per_s", "docs_per_s", "p50_ms", "p99_ms")
            }
            for other, name in (("vllm", "ratio_to_vllm"), (ALONE, "fraction_of_engine_alone")):
                paired = [p.requests_per_s / by_round[other, p.round].requests_per_s
                          for p in mine if (other, p.round) in by_round]  # fmt: skip
                if paired and server != other:
                    row[name] = round(statistics.median(paired), 3)
                    row[name + "_rounds"] = [round(x, 3) for x in paired]
            cpus = [p.cpu_ms_per_request for p in mine if p.cpu_ms_per_request]
            if cpus:
                row["cpu_ms_per_request"] = {k: round(statistics.median(c[k] for c in cpus), 3) for k in cpus[0]}
            rows[server] = row
        summary[shape.label] = rows
    return summary


def markdown(summary: dict[str, dict[str, dict]], todo: list[Shape]) -> str:
    """The summary as docs/performance.md's table: each shape's documents/s per server, ours over
    vLLM's (each round's) and over the engine alone, p50/p99, ours' CPU per request by process."""

    def cell(row: dict | None, key: str) -> str:
        return f"{row[key]:,.0f}" if row and key in row else "-"

    lines = [
        "| shape | documents/s: ours, vLLM, Infinity, engine alone | ours / vLLM requests/s (rounds) "
        "| ours / engine alone | p50 ms ours, vLLM | p99 ms ours, vLLM "
        "| ours' CPU ms a request: API, core, worker |",
        "|---|---|---|---|---|---|---|",
    ]
    for shape in todo:
        rows = summary.get(shape.label, {})
        ours, vllm = rows.get("ours"), rows.get("vllm")
        if ours is None:
            continue
        docs = ", ".join(cell(rows.get(s), "docs_per_s") for s in ("ours", "vllm", "infinity", ALONE))
        ratio = "-"
        if "ratio_to_vllm" in ours:
            ratio = f"**{ours['ratio_to_vllm']:.2f}x** ({', '.join(f'{x:.2f}' for x in ours['ratio_to_vllm_rounds'])})"
        alone = f"{ours['fraction_of_engine_alone']:.2f}" if "fraction_of_engine_alone" in ours else "-"
        cpu = ours.get("cpu_ms_per_request") or {}
        cpu_text = ", ".join(f"{cpu[k]:.1f}" for k in ("api", "engine_core", "worker") if k in cpu)
        lines.append(
            f"| {shape.docs} x {shape.input_len} | {docs} | {ratio} | {alone} | {cell(ours, 'p50_ms')}, "
            f"{cell(vllm, 'p50_ms')} | {cell(ours, 'p99_ms')}, {cell(vllm, 'p99_ms')} | {cpu_text} |"
        )
    return "\n".join(lines)


def plot(summary: dict[str, dict[str, dict]], todo: list[Shape], path: Path, args: argparse.Namespace) -> None:
    """Documents/s and p50/p99 against documents per request, one column per document length;
    ours' points marked with their ratio to vLLM's server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({s.input_len for s in todo})
    fig, axes = plt.subplots(2, len(lengths), figsize=(5.5 * len(lengths), 8), squeeze=False)
    styles = {"ours": ("tab:blue", "-"), "vllm": ("tab:orange", "-"), "infinity": ("tab:green", "-"),
              ALONE: ("black", "--")}  # fmt: skip
    for col, n in enumerate(lengths):
        shapes_n = [s for s in todo if s.input_len == n]
        top, bottom = axes[0][col], axes[1][col]
        servers = dict.fromkeys(srv for s in shapes_n for srv in summary.get(s.label, {}))
        for server in servers:
            have = [s for s in shapes_n if server in summary.get(s.label, {})]
            xs = [s.docs for s in have]
            color, line = styles.get(server, ("tab:gray", ":"))
            rows = [summary[s.label][server] for s in have]
            top.plot(xs, [r["docs_per_s"] for r in rows], line, color=color, marker="o", label=server)
            if server != ALONE:
                bottom.plot(xs, [r["p50_ms"] for r in rows], line, color=color, marker="o", label=f"{server} p50")
                bottom.plot(xs, [r["p99_ms"] for r in rows], ":", color=color, marker="x", label=f"{server} p99")
            if server == "ours":
                for x, r in zip(xs, rows, strict=True):
                    if "ratio_to_vllm" in r:
                        top.annotate(f"{r['ratio_to_vllm']:.2f}x", (x, r["docs_per_s"]), textcoords="offset points",
                                     xytext=(0, 6), ha="center", fontsize=8, color=color)  # fmt: skip
        top.set_title(f"documents of ~{n // 2} tokens (--random-input-len {n})")
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.set_xlabel("documents per request")
            ax.grid(True, which="both", alpha=0.3)
        bottom.set_yscale("log")
        top.set_ylabel("documents/s (median of rounds)")
        bottom.set_ylabel("latency per request, ms")
        top.legend(fontsize=8)
        bottom.legend(fontsize=7, ncol=2)
    fig.suptitle(f"{Path(args.model).name}, concurrency {args.concurrency}, {args.rounds} rounds; "
                 "labels: ours / vLLM requests/s")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=90)
