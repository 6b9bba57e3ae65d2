#!/usr/bin/env python3
"""Does the reranker help on my data? nDCG@10, MRR@10, Recall@100 and MAP of the first stage alone
and reranked by each (server x instruction), with paired significance tests.

    python scripts/evaluate.py --data path/to/beir-folder [--split test] \\
        [--run first-stage.trec | --bm25] [--depth 100] \\
        --server http://localhost:8000 [--server http://gpu-8b:8000 ...] [--api-key KEY] \\
        [--instruction "..." ...] [--concurrency 8] [--out results/] [--long-document-strategy chunk]

Data: the BEIR layout (corpus.jsonl, queries.jsonl, qrels/<split>.tsv), as MTEB's retrieval tasks
use. Candidates: the top --depth of the first-stage run given (TREC format) or of BM25 (bm25s).
Every combination of --server and instruction (the server's default one always among them) reranks
them through POST /v1/rerank. Written to --out: summary.json, first-stage.trec, one TREC run per
combination, combinations.json; a run interrupted (Ctrl-C, a server restart) continues from the
queries already scored when started again with the same --out. An HTTP client of the server:
nothing from server/ is imported, so it measures any deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))  # rerank_eval, beside this file

from rerank_eval.client import Combination, ServerError, load_partial, rerank_all
from rerank_eval.data import DataError, Run, load_beir, read_trec_run, top, write_trec_run
from rerank_eval.first_stage import bm25
from rerank_eval.metrics import MAX_P, METRICS, compare, scores

FIRST_STAGE = "first-stage"
EVAL_EXTRA = ("ranx", "tqdm")  # and bm25s for --bm25: pyproject.toml's eval extra
PROBES = 3  # connection attempts per server before the run starts, a second apart
HEADERS = {"ndcg@10": "nDCG@10", "mrr@10": "MRR@10", "recall@100": "R@100", "map": "MAP"}


def combinations(servers: list[str], instructions: list[str]) -> list[Combination]:
    """Every (server, instruction); the default instruction (None) first for each server."""
    wanted = [None, *dict.fromkeys(i for i in instructions if i)]
    out = []
    for n, server in enumerate(servers, start=1):
        host = re.sub(r"[^A-Za-z0-9.-]+", "_", server.split("://", 1)[-1]).strip("_")
        for k, instruction in enumerate(wanted):
            out.append(Combination(f"s{n}-{host}-{'default' if k == 0 else f'instruction{k}'}", server, instruction))
    return out


def baselines(combo: Combination, combos: list[Combination]) -> list[str]:
    """What a combination is tested against: the first stage, and its server's default instruction."""
    default = next(c.name for c in combos if c.server == combo.server and c.instruction is None)
    return [FIRST_STAGE] + ([default] if default != combo.name else [])


def missing_modules(bm25: bool) -> list[str]:
    return [m for m in (*EVAL_EXTRA, *(["bm25s"] if bm25 else [])) if find_spec(m) is None]


def unreachable(server: str) -> str | None:
    """Why `server` cannot be reached at all (None if it answers anything, 404 included): a typo in
    --server fails in seconds; a server that goes away later is retried as a restart."""
    reason = ""
    for attempt in range(PROBES):
        try:
            httpx.get(server.rstrip("/") + "/health", timeout=5)
            return None
        except httpx.TransportError as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if attempt + 1 < PROBES:
            time.sleep(1)
    return reason


def table(summary: dict) -> str:
    cols = [HEADERS[m] for m in METRICS]
    lines = [
        "| run | " + " | ".join(cols) + " | docs/s | seconds |",
        "|---|" + "---|" * (len(cols) + 2),
    ]
    for name, row in summary["runs"].items():
        cells = []
        for m in METRICS:
            mark = "".join(
                symbol
                for symbol, base in (("†", FIRST_STAGE), ("‡", row.get("default")))
                if base and row["p_values"].get(base, {}).get(m, 1.0) < MAX_P
            )
            cells.append(f"{row['metrics'][m]:.4f}{mark}")
        speed = f"{row['docs_per_s']:.0f}" if row.get("docs_per_s") else "-"
        seconds = f"{row['seconds']:.1f}" if row.get("seconds") is not None else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {speed} | {seconds} |")
    lines.append(
        f"† better or worse than the first stage, ‡ than the server's default instruction (paired t-test, p < {MAX_P})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a BEIR folder")
    parser.add_argument("--split", default="test")
    first = parser.add_mutually_exclusive_group(required=True)
    first.add_argument("--run", type=Path, help="the first stage's run, TREC format")
    first.add_argument("--bm25", action="store_true", help="a BM25 first stage (bm25s)")
    parser.add_argument("--depth", type=int, default=100, help="candidates reranked per query")
    parser.add_argument("--server", action="append", required=True, help="a rerank server's URL (repeat for more)")
    parser.add_argument("--api-key")
    parser.add_argument("--instruction", action="append", default=[], help="an instruction to try (repeat)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--long-document-strategy", choices=["truncate", "chunk"])
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    missing = missing_modules(args.bm25)
    if missing:
        print(
            f"error: scripts/evaluate.py needs the eval extra (missing: {', '.join(missing)}): "
            "pip install -e '.[eval]' (or scripts/setup.sh --dev)",
            file=sys.stderr,
        )
        return 2
    try:
        dataset = load_beir(args.data, args.split)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for server in args.server:  # before the first stage, which may take minutes on a large corpus
        reason = unreachable(server)
        if reason is not None:
            print(f"error: cannot reach {server} ({reason}); is it running, and is --server right?", file=sys.stderr)
            return 2
    try:
        first_stage: Run = read_trec_run(args.run, dataset) if args.run else bm25(dataset, args.depth)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    first_stage = {q: first_stage.get(q, {}) for q in dataset.queries}
    candidates = top(first_stage, args.depth)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "partial").mkdir(exist_ok=True)
    reranked_set = {q: {d: first_stage[q][d] for d in c} for q, c in candidates.items()}  # the first stage's top
    write_trec_run(args.out / f"{FIRST_STAGE}.trec", reranked_set, FIRST_STAGE)
    combos = combinations(args.server, args.instruction)
    (args.out / "combinations.json").write_text(
        json.dumps([{"name": c.name, "server": c.server, "instruction": c.instruction} for c in combos], indent=2)
    )
    extra = {"long_document_strategy": args.long_document_strategy} if args.long_document_strategy else {}
    print(f"{len(dataset.queries)} judged queries, {len(dataset.corpus)} documents, top {args.depth} reranked")

    runs: dict[str, Run] = {FIRST_STAGE: reranked_set}
    timing: dict[str, tuple[int, float]] = {}
    from tqdm import tqdm

    for combo in combos:
        partial = args.out / "partial" / f"{combo.name}.jsonl"
        with tqdm(total=len(candidates), desc=combo.name, unit="query", file=sys.stderr) as progress:
            try:
                done = len(load_partial(partial))
                if done:
                    progress.write(f"{combo.name}: resuming, {done} queries already scored", file=sys.stderr)
                    progress.update(min(done, len(candidates)))
                run, docs, seconds = asyncio.run(
                    rerank_all(
                        combo, candidates, dataset.queries, dataset.corpus, partial,
                        args.api_key, args.concurrency, extra, progress,
                    )
                )  # fmt: skip
            except ServerError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                print(f"\ninterrupted: run the same command again to continue ({args.out})", file=sys.stderr)
                return 130
        runs[combo.name] = {q: run[q] for q in candidates}
        timing[combo.name] = (docs, seconds)
        write_trec_run(args.out / f"{combo.name}.trec", runs[combo.name], combo.name)

    p_values = compare(dataset.qrels, runs)
    summary: dict = {"queries": len(dataset.queries), "depth": args.depth, "metrics": METRICS, "runs": {}}
    for name, run in runs.items():
        combo = next((c for c in combos if c.name == name), None)
        row: dict = {"metrics": scores(dataset.qrels, run), "p_values": {}}
        if combo is not None:
            row.update(server=combo.server, instruction=combo.instruction)
            tested = baselines(combo, combos)
            row["p_values"] = {base: p_values[name][base] for base in tested}
            row["default"] = tested[1] if len(tested) > 1 else None
            docs, seconds = timing[name]
            row.update(seconds=seconds, docs_per_s=docs / seconds if docs and seconds else None)
        summary["runs"][name] = row
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(table(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
