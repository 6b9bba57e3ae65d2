"""The benchmark's workloads: seeded, repeatable lists of rerank requests.

- `search`: queries of 10-30 tokens, documents of 100-500 tokens, 20-100 a request (`bench.py
  run` and `compare`; `compare` makes a fresh one every round, so no round finds another's
  documents in the prefix cache, as no real search traffic would);
- `long`: documents of 2-10 windows' worth of tokens (`bench.py long`), each request sent once with
  long_document_strategy truncate and once with chunk (`Workload.with_strategy`);
- `repeat` and `zipf` (`bench.py cache`): repeated traffic for the score cache, a set of requests
  sent K times in turn, and a Zipf-distributed stream of queries."""

from __future__ import annotations

import random
from dataclasses import dataclass

# Words that are one token each in the Qwen3 vocabulary (with a leading space), so lengths in
# words are lengths in tokens.
WORDS = (
    "the of and to in is was for that with as on by at from his her an were are which this be or has had "
    "not but first one their its new after who they have two been other also into all more time can during "
    "city world only school team used may most year state people some game then when where over war film "
    "season group history company river house music national university series known later part since "
    "three many under such these between american work life well did number before both area because "
    "water system power market search light energy model data paper result method study test value field"
).split()


@dataclass
class Workload:
    requests: list[dict]

    @classmethod
    def make(
        cls,
        n: int,
        seed: int = 0,
        docs: tuple[int, int] = (20, 100),
        doc_tokens: tuple[int, int] = (100, 500),
        query_tokens: tuple[int, int] = (10, 30),
    ) -> Workload:
        rng = random.Random(seed)
        out = []
        for i in range(n):
            query = f"q{i} " + " ".join(rng.choices(WORDS, k=rng.randint(*query_tokens) - 2))
            documents = [" ".join(rng.choices(WORDS, k=rng.randint(*doc_tokens))) for _ in range(rng.randint(*docs))]
            out.append({"query": query, "documents": documents, "return_documents": False})
        return cls(out)

    @property
    def documents(self) -> int:
        return sum(len(r["documents"]) for r in self.requests)

    def with_strategy(self, strategy: str) -> Workload:
        """The same documents with long_document_strategy set (this server's field). The query
        starts with the strategy's name, so that one strategy's run finds nothing of the other's
        in the prefix cache (truncate's prompts are chunk's first windows)."""
        return Workload(
            [{**r, "query": f"{strategy} {r['query']}", "long_document_strategy": strategy} for r in self.requests]
        )

    def for_model(self, name: str) -> Workload:
        """The same requests naming a served model (a server of several: docs/models.md)."""
        return Workload([{**r, "model": name} for r in self.requests])


def search(n: int, seed: int, docs: tuple[int, int], doc_tokens: tuple[int, int]) -> Workload:
    """The search workload: short queries over 100-500-token passages (the defaults of bench.py)."""
    return Workload.make(n, seed, docs, doc_tokens)


def long(n: int, seed: int, docs: tuple[int, int], max_model_len: int) -> Workload:
    """Documents of 2-10 windows' worth of tokens (a window: about what the prompt leaves)."""
    return Workload.make(n, seed, docs, long_doc_tokens(max_model_len))


def long_doc_tokens(max_model_len: int) -> tuple[int, int]:
    chunk = max_model_len - 100  # about what the prompt leaves for a document
    return 2 * chunk, 10 * chunk


def repeat(n: int, times: int, seed: int, docs: tuple[int, int], doc_tokens: tuple[int, int]) -> Workload:
    """`n` search requests, the whole set sent `times` times in turn (pagination, retries,
    evaluation runs): every request after the first pass repeats one exactly."""
    base = Workload.make(n, seed, docs, doc_tokens).requests
    return Workload([request for _ in range(times) for request in base])


def zipf(
    n: int, queries: int, seed: int, docs: tuple[int, int], doc_tokens: tuple[int, int], s: float = 1.1
) -> Workload:
    """A stream of `n` requests over `queries` distinct ones (each a query with its candidates),
    drawn by a Zipf law of exponent `s`: a few head queries come back often, most rarely."""
    distinct = Workload.make(queries, seed, docs, doc_tokens).requests
    weights = [1 / (rank + 1) ** s for rank in range(queries)]
    rng = random.Random(seed + 1)
    return Workload(rng.choices(distinct, weights=weights, k=n))
