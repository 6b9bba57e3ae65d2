"""A BEIR-layout data set (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) and TREC run files.

Anything malformed is a `DataError` that names the file and the line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

Run = dict[str, dict[str, float]]  # query id -> document id -> score


class DataError(ValueError):
    def __init__(self, path: Path, line: int | None, message: str) -> None:
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


@dataclass
class Dataset:
    corpus: dict[str, str]  # document id -> text (title and text)
    queries: dict[str, str]  # query id -> text, only those judged in the split
    qrels: dict[str, dict[str, int]]  # query id -> document id -> relevance (> 0: relevant)


def _jsonl(path: Path, fields: tuple[str, ...]) -> list[tuple[int, dict]]:
    if not path.is_file():
        raise DataError(path, None, "missing (a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/<split>.tsv)")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(path, number, f"not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(path, number, "not a JSON object")
            for name in fields:
                if not isinstance(row.get(name), str):
                    raise DataError(path, number, f"no string field {name!r}")
            rows.append((number, row))
    return rows


def load_beir(folder: Path, split: str = "test") -> Dataset:
    corpus = {}
    for _, row in _jsonl(folder / "corpus.jsonl", ("_id", "text")):
        title = row.get("title") if isinstance(row.get("title"), str) else ""
        corpus[row["_id"]] = f"{title}\n{row['text']}" if title else row["text"]
    all_queries = {row["_id"]: row["text"] for _, row in _jsonl(folder / "queries.jsonl", ("_id", "text"))}
    path = folder / "qrels" / f"{split}.tsv"
    if not path.is_file():
        raise DataError(path, None, f"missing: no judgements for split {split!r}")
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            cells = line.rstrip("\n").split("\t")
            if number == 1 and cells[0] in ("query-id", "query_id", "qid"):
                continue  # the header
            if not line.strip():
                continue
            if len(cells) != 3:
                raise DataError(
                    path, number, f"expected 3 tab-separated columns (query-id, corpus-id, score), got {len(cells)}"
                )
            qid, docid, score = cells
            try:
                relevance = int(float(score))
            except ValueError:
                raise DataError(path, number, f"score {score!r} is not a number") from None
            if qid not in all_queries:
                raise DataError(path, number, f"query {qid!r} is not in queries.jsonl")
            if docid not in corpus:
                raise DataError(path, number, f"document {docid!r} is not in corpus.jsonl")
            qrels.setdefault(qid, {})[docid] = relevance
    qrels = {q: docs for q, docs in qrels.items() if any(r > 0 for r in docs.values())}
    if not qrels:
        raise DataError(path, None, "no query has a relevant document")
    return Dataset(corpus, {q: all_queries[q] for q in qrels}, qrels)


def read_trec_run(path: Path, dataset: Dataset) -> Run:
    """`qid Q0 docid rank score tag` lines; documents not in the corpus are an error."""
    run: Run = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            cells = line.split()
            if not cells:
                continue
            if len(cells) != 6:
                raise DataError(path, number, f"expected 6 columns (qid Q0 docid rank score tag), got {len(cells)}")
            qid, _, docid, _, score, _ = cells
            if docid not in dataset.corpus:
                raise DataError(path, number, f"document {docid!r} is not in the corpus")
            try:
                run.setdefault(qid, {})[docid] = float(score)
            except ValueError:
                raise DataError(path, number, f"score {score!r} is not a number") from None
    return run


def write_trec_run(path: Path, run: Run, tag: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for qid in sorted(run):
            ranked = sorted(run[qid].items(), key=lambda kv: (-kv[1], kv[0]))
            for rank, (docid, score) in enumerate(ranked, start=1):
                f.write(f"{qid} Q0 {docid} {rank} {score!r} {tag}\n")


def top(run: Run, depth: int) -> dict[str, list[str]]:
    """Each query's `depth` best documents (ties: by id), best first."""
    return {q: [d for d, _ in sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:depth]] for q, docs in run.items()}
