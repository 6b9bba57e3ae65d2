"""nDCG@10, MRR@10, Recall@100 and MAP with ranx (trec_eval's definitions), and paired Student's
t-tests between runs (ranx.compare)."""

from __future__ import annotations

from rerank_eval.data import Run

METRICS = ["ndcg@10", "mrr@10", "recall@100", "map"]
MAX_P = 0.05


def scores(qrels: dict[str, dict[str, int]], run: Run) -> dict[str, float]:
    """The mean of each metric over the judged queries (a query the run lacks scores 0)."""
    from ranx import Qrels, evaluate
    from ranx import Run as RanxRun

    full = {q: run.get(q) or {"__none__": 0.0} for q in qrels}
    result = evaluate(Qrels(qrels), RanxRun(full), METRICS, make_comparable=True)
    return {m: float(result[m]) for m in METRICS}


def compare(qrels: dict[str, dict[str, int]], runs: dict[str, Run]) -> dict[str, dict[str, dict[str, float]]]:
    """p-values of the paired t-test of every run against every other: name -> other -> metric -> p."""
    from ranx import Qrels
    from ranx import Run as RanxRun
    from ranx import compare as ranx_compare

    ranx_runs = [RanxRun({q: run.get(q) or {"__none__": 0.0} for q in qrels}, name=name) for name, run in runs.items()]
    report = ranx_compare(Qrels(qrels), ranx_runs, METRICS, stat_test="student", max_p=MAX_P, make_comparable=True)
    data = report.to_dict()
    return {name: {other: dict(p) for other, p in data[name]["comparisons"].items()} for name in runs}
