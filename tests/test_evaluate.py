"""scripts/evaluate.py run as a search engineer runs it, against the live test server (real engine),
on a small BEIR-format set made here: planted relevant documents BM25 finds, two instructions,
429s retried, an interrupted run resumed, malformed data named by file and line; and its metrics
against ranx on its own run files and against values computed by hand."""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import API_KEY, ROOT, wait_until
from .helpers import free_port

pytestmark = pytest.mark.engine

EVALUATE = [sys.executable, str(ROOT / "scripts" / "evaluate.py")]
FILLER = (
    "the of and to in is was for that with as on by at from city world school team people river house music "
    "market light energy model data paper result method study test value field history company season group"
).split()
QUERIES = 24
DEPTH = 10
INSTRUCTION = "Given a question about a made-up word, find the passages that use that word"


def make_beir(folder: Path, seed: int = 0) -> dict[str, list[str]]:
    """A BEIR folder: each query names two made-up words that only its two planted documents use.
    Returns query id -> its planted (relevant) document ids."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "qrels").mkdir(exist_ok=True)
    corpus, queries, planted = [], [], {}
    for q in range(QUERIES):
        a, b = f"zorb{q}x", f"quil{q}y"
        queries.append({"_id": f"q{q}", "text": f"what does {a} {b} mean"})
        planted[f"q{q}"] = []
        for k in range(2):
            docid = f"d{q}-{k}"
            filler = " ".join(rng.choices(FILLER, k=30))
            corpus.append({"_id": docid, "title": f"On {a}", "text": f"{filler} {a} {b} {filler}"})
            planted[f"q{q}"].append(docid)
    for n in range(250):
        corpus.append({"_id": f"noise{n}", "title": "", "text": " ".join(rng.choices(FILLER, k=40))})
    rng.shuffle(corpus)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, docs in planted.items() for d in docs]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return planted


def evaluate(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EVALUATE, *args], capture_output=True, text=True, timeout=900, **kwargs)


def read_run(path: Path) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        qid, _, docid, _, score, _ = line.split()
        run.setdefault(qid, {})[docid] = float(score)
    return run


def rerank_requests(server) -> float:
    with server.client() as c:
        text = c.get("/metrics").text
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "rerank_requests_total" and s.labels == {"route": "/v1/rerank", "status": "200"}
    )


def test_bm25_then_two_instructions_against_the_live_server(server, tmp_path):
    from ranx import Qrels, Run
    from ranx import evaluate as ranx_evaluate

    data, out = tmp_path / "beir", tmp_path / "out"
    planted = make_beir(data)
    result = evaluate(
        "--data", str(data), "--bm25", "--depth", str(DEPTH), "--server", server.url, "--api-key", API_KEY,
        "--instruction", INSTRUCTION, "--concurrency", "4", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    combos = json.loads((out / "combinations.json").read_text())
    assert [c["instruction"] for c in combos] == [None, INSTRUCTION]  # the default always among them

    first = read_run(out / "first-stage.trec")
    assert all(set(docs) <= set(first[q]) for q, docs in planted.items()), "BM25 missed a planted document"
    assert all(len(first[q]) == DEPTH for q in planted)

    with server.client() as c:
        corpus = {
            json.loads(line)["_id"]: json.loads(line) for line in (data / "corpus.jsonl").read_text().splitlines()
        }
        queries = {
            json.loads(line)["_id"]: json.loads(line)["text"]
            for line in (data / "queries.jsonl").read_text().splitlines()
        }
        for combo in combos:
            run = read_run(out / f"{combo['name']}.trec")
            assert set(run) == set(planted) and all(set(run[q]) == set(first[q]) for q in run)  # every top-DEPTH
            for qid in ("q0", "q7", "q19"):
                docids = sorted(first[qid])
                texts = [
                    f"{corpus[d]['title']}\n{corpus[d]['text']}" if corpus[d]["title"] else corpus[d]["text"]
                    for d in docids
                ]
                body = {"query": queries[qid], "documents": texts}
                if combo["instruction"]:
                    body["instruction"] = combo["instruction"]
                direct = {
                    docids[r["index"]]: r["relevance_score"] for r in c.post("/v1/rerank", json=body).json()["results"]
                }
                assert direct == pytest.approx(run[qid], abs=1e-6)

    summary = json.loads((out / "summary.json").read_text())
    qrels = Qrels({q: {d: 1 for d in docs} for q, docs in planted.items()})
    for name, row in summary["runs"].items():
        want = ranx_evaluate(qrels, Run(read_run(out / f"{name}.trec")), ["ndcg@10", "mrr@10", "recall@100", "map"])
        assert row["metrics"] == pytest.approx(want, abs=1e-9), name
    assert summary["runs"]["first-stage"]["metrics"]["recall@100"] == 1.0
    reranked = [r for n, r in summary["runs"].items() if n != "first-stage"]
    assert all(set(r["p_values"]) >= {"first-stage"} and r["docs_per_s"] > 0 for r in reranked)
    assert "nDCG@10" in result.stdout and "first-stage" in result.stdout


def test_metrics_equal_hand_computed_values():
    sys.path.insert(0, str(ROOT / "scripts"))
    from rerank_eval.metrics import scores

    qrels = {"a": {"d1": 1, "d3": 1}, "b": {"d9": 1}}
    run = {"a": {"d2": 0.9, "d1": 0.8, "d4": 0.7, "d3": 0.6}, "b": {"d5": 0.5}}
    got = scores(qrels, run)
    # a: relevant at ranks 2 and 4. DCG = 1/log2(3) + 1/log2(5); ideal = 1 + 1/log2(3).
    ndcg_a = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert got["ndcg@10"] == pytest.approx(ndcg_a / 2)  # b finds nothing: 0
    assert got["mrr@10"] == pytest.approx((1 / 2 + 0) / 2)
    assert got["recall@100"] == pytest.approx((2 / 2 + 0) / 2)
    assert got["map"] == pytest.approx(((1 / 2 + 2 / 4) / 2 + 0) / 2)


def test_a_server_answering_429_is_retried_to_completion(live_server, engine, tmp_path):
    """--max-pairs-in-flight of one request's worth: concurrent requests get 429 until it is free."""
    from .fake_engine import EngineWrapper

    class HeldUntilRefused(EngineWrapper):
        """Holds the first request in the engine until the server has refused another one."""

        async def before(self, prompts, request_id) -> None:
            if not getattr(self, "released", False):
                self.released = True
                for _ in range(600):
                    if overloaded() > 0:
                        break
                    await asyncio.sleep(0.05)

    held = HeldUntilRefused(engine)
    busy = live_server(engine_override=held, max_pairs_in_flight=DEPTH, max_documents=DEPTH)

    def overloaded() -> float:
        return busy.app.state.metrics.rejected.labels(busy.service.name, "overloaded")._value.get()

    data, out = tmp_path / "beir", tmp_path / "out"
    make_beir(data)
    result = evaluate(
        "--data", str(data), "--bm25", "--depth", str(DEPTH), "--server", busy.url, "--api-key", API_KEY,
        "--concurrency", "8", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert overloaded() > 0, "no request was refused: nothing was retried"
    [name] = [c["name"] for c in json.loads((out / "combinations.json").read_text())]
    assert len(read_run(out / f"{name}.trec")) == QUERIES


def test_an_interrupted_run_resumes_without_rescoring(live_server, engine, tmp_path):
    """Ctrl-C while the server holds a query: the run stops at that point whatever the machine's speed (a
    run left to race the poll can finish before it is interrupted), and the resumed run sends only the rest."""
    from .fake_engine import EngineWrapper

    class HeldAfter(EngineWrapper):
        """Scores the first `free` requests, then holds every later one until the test releases them."""

        def __init__(self, real, free: int) -> None:
            super().__init__(real)
            self.free, self.seen, self.held = free, 0, 0
            self.released = threading.Event()

        async def before(self, prompts, request_id) -> None:
            self.seen += 1
            if self.seen > self.free and not self.released.is_set():
                self.held += 1
                await asyncio.to_thread(self.released.wait)

    gate = HeldAfter(engine, free=5)
    held = live_server(engine_override=gate, score_cache_size=0)
    data, out = tmp_path / "beir", tmp_path / "out"
    make_beir(data)
    args = [*EVALUATE, "--data", str(data), "--bm25", "--depth", str(DEPTH), "--server", held.url]
    args += ["--api-key", API_KEY, "--concurrency", "1", "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: gate.held > 0 or proc.poll() is not None, timeout=300), "no query reached the engine"
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGINT)  # Ctrl-C while the sixth query waits for its scores
        _, stderr = proc.communicate(timeout=120)
    finally:
        gate.released.set()
    partial = out / "partial"
    done = sum(len(f.read_text().splitlines()) for f in partial.glob("*.jsonl"))
    assert proc.returncode != 0 and done == 5, stderr
    before = rerank_requests(held)
    result = evaluate(*args[2:])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"resuming, {done} queries already scored" in result.stderr
    assert rerank_requests(held) - before == QUERIES - done, "queries scored before were sent again"
    [name] = [c["name"] for c in json.loads((out / "combinations.json").read_text())]
    assert len(read_run(out / f"{name}.trec")) == QUERIES


@pytest.mark.parametrize(
    ("file", "line", "content", "message"),
    [
        ("corpus.jsonl", 3, "{not json\n", "not valid JSON"),
        ("queries.jsonl", 2, '{"_id": "q1"}\n', "no string field 'text'"),
        ("qrels/test.tsv", 4, "q1\td0-0\n", "expected 3 tab-separated columns"),
    ],
)
def test_malformed_data_names_the_file_and_the_line(tmp_path, file, line, content, message):
    data = tmp_path / "beir"
    make_beir(data)
    path = data / file
    lines = path.read_text().splitlines(keepends=True)
    lines[line - 1] = content
    path.write_text("".join(lines))
    result = evaluate("--data", str(data), "--bm25", "--server", "http://127.0.0.1:9", "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    assert f"{path}, line {line}: {message}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert os.path.exists(data)


def test_a_server_that_refuses_connections_at_the_start_fails_at_once(tmp_path):
    """A typo in --server: one line after a few connection attempts, not minutes of retries."""
    data = tmp_path / "beir"
    make_beir(data)
    url = f"http://127.0.0.1:{free_port()}"
    result = evaluate("--data", str(data), "--bm25", "--server", url, "--out", str(tmp_path / "o"))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot reach {url} (ConnectError") and "--server" in line, line
    assert not (tmp_path / "o").exists()  # nothing was started


def test_a_missing_eval_extra_is_one_line_naming_the_install_command(tmp_path, monkeypatch, capsys):
    import evaluate as tool

    real = tool.find_spec
    monkeypatch.setattr(tool, "find_spec", lambda name: None if name in ("ranx", "bm25s") else real(name))
    assert tool.main(["--data", str(tmp_path), "--bm25", "--server", "http://127.0.0.1:9"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "missing: ranx, bm25s" in line and "pip install -e '.[eval]'" in line, line
