"""A BM25 first stage with bm25s (English stop words), for data sets that come without a run."""

from __future__ import annotations

from rerank_eval.data import Dataset, Run


def bm25(dataset: Dataset, depth: int) -> Run:
    import bm25s

    ids = list(dataset.corpus)
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize([dataset.corpus[i] for i in ids], stopwords="en", show_progress=False), show_progress=False
    )
    qids = list(dataset.queries)
    tokens = bm25s.tokenize([dataset.queries[q] for q in qids], stopwords="en", show_progress=False)
    found, scores = retriever.retrieve(tokens, k=min(depth, len(ids)), show_progress=False)
    return {
        qid: {ids[int(doc)]: float(score) for doc, score in zip(found[row], scores[row], strict=True)}
        for row, qid in enumerate(qids)
    }
