"""What one rerank request asks the engine to score, and what comes back, in neither API dialect.

Each dialect (Cohere/Jina/vLLM in server/dialects/cohere.py, TEI in server/dialects/tei.py) turns its
request into a `RerankJob` and a `Ranking` into its response; server/rerank/serving.py scores jobs only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

Strategy = Literal["truncate", "chunk"]
Direction = Literal["right", "left"]

# A request's `priority` (Cohere's and vLLM's field): lower is handled earlier, 0 by default.
MIN_PRIORITY, MAX_PRIORITY = -1000, 1000


class Lane(StrEnum):
    """A priority class, as metrics and admission see it: priority <= 0 is interactive (a user
    waits; the default), above 0 bulk (re-indexing, evaluation, backfills)."""

    INTERACTIVE = "interactive"
    BULK = "bulk"


def lane_of(priority: int) -> Lane:
    return Lane.INTERACTIVE if priority <= 0 else Lane.BULK


def effective_priority(requested: int, key_default: int | None) -> int:
    """The priority a request is served at: its own field (0 when it sends none), and with an API key
    that has a default, the larger (later) of the two: a request may defer itself below its key's
    default, never claim more (a bulk pipeline's key cannot send interactive traffic)."""
    return requested if key_default is None else max(requested, key_default)


@dataclass(frozen=True)
class RerankJob:
    query: str
    texts: list[str]
    instruction: str | None = None
    max_tokens_per_doc: int | None = None
    long_document_strategy: Strategy | None = None  # None: the server's --long-document-strategy
    max_chunks_per_doc: int | None = None  # None: the server's --max-chunks-per-doc
    # truncate: False refuses a text that does not fit (TEI's truncate: false); None/True cut it
    truncate: bool | None = None
    truncation_direction: Direction = "right"  # right: keep a document's start; left: its end
    priority: int = 0  # lower first (the request's field and its API key's default, server/http/api_router.py)
    max_prompt_tokens: int | None = None  # vLLM's truncate_prompt_tokens: each prompt at most this long (-1: off)


@dataclass(frozen=True)
class Passage:
    """Where the best window of a chunked document lies: `text[start:end]` (character offsets);
    `chunk` is the window's number from 0, `chunks` how many windows of the document were scored."""

    start: int
    end: int
    chunk: int
    chunks: int


@dataclass
class Ranking:
    """Every document's score, best first."""

    order: list[int]  # document indices, highest score first (ties: lower index first)
    logits: list[float]  # per document (in request order): the classifier's logit (Qwen3: yes minus no)
    passages: list[Passage | None]  # per document: its best window, if it was chunked into several
    prompt_tokens: int = 0  # every prompt's tokens (windows included), the score cache's hits too
    cached_tokens: int = 0  # of the prompts the engine scored: tokens read from vLLM's prefix cache
    score_cache_hits: int = 0  # pairs answered from the score cache (or an identical one in flight)
    identity_activation: bool = False  # the model's score is its logit (a cross-encoder's config can say so)
    scores: list[float] = field(init=False)  # per document: the probability of "yes", sigmoid(logit)

    def __post_init__(self) -> None:
        self.scores = list(self.logits) if self.identity_activation else [sigmoid(x) for x in self.logits]

    def top(self, n: int | None) -> list[int]:
        return self.order if n is None else self.order[:n]


def sigmoid(x: float) -> float:
    """1 / (1 + e^-x) without overflow for any x."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)
