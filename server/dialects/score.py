"""vLLM's score API (`POST /score`, `/v1/score`): request and response models as vLLM 0.32 takes
and gives them, and the translation to rerank jobs (server/core/rerank_job.py).

A body names its two sides in one of vLLM's four ways: `queries`/`documents`, `queries`/`items`,
`data_1`/`data_2` or `text_1`/`text_2`. Each side is a string or a list of strings; the pairs are
1:1, 1:N (one query against every document) or N:N (the i-th with the i-th). The answer has one
`{"index", "object": "score", "score"}` per pair, in the order sent. Pairs that share a query are
scored as one rerank job, so they share its prompt prefix in the engine and its score cache.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

from server.core.rerank_job import MAX_PRIORITY, MIN_PRIORITY, RerankJob

SIDES = (("queries", "documents"), ("queries", "items"), ("data_1", "data_2"), ("text_1", "text_2"))
Side = StrictStr | list[StrictStr]


def _one_pair_named(schema: dict[str, Any]) -> None:
    """The published schema asks what the validator asks, where JSON Schema can say it: one pair of
    sides named, each a string or a list of at least one (1:1, 1:N or N:N it cannot say)."""
    side = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]}
    schema["anyOf"] = [{"required": [a, b], "properties": {a: side, b: side}} for a, b in SIDES]


class ScoreRequest(BaseModel):
    """vLLM's score request; fields of vLLM's it does not use are ignored."""

    model_config = ConfigDict(extra="ignore", json_schema_extra=_one_pair_named)

    queries: Side | None = Field(None, description="the first side (with documents or items)")
    documents: Side | None = Field(None, description="the second side, with queries")
    items: Side | None = Field(None, description="the second side, with queries (vLLM's other name)")
    data_1: Side | None = Field(None, description="the first side (with data_2)")
    data_2: Side | None = Field(None, description="the second side (with data_1)")
    text_1: Side | None = Field(None, description="the first side (with text_2; vLLM's older names)")
    text_2: Side | None = Field(None, description="the second side (with text_1)")
    model: StrictStr | None = Field(None, description="which served model scores (absent: the first)")
    instruction: StrictStr | None = Field(None, min_length=1, description="task instruction (Qwen3-Reranker)")
    use_activation: StrictBool | None = Field(
        None, description="false: each score is the model's logit; true or absent: its probability"
    )
    truncate_prompt_tokens: StrictInt | None = Field(
        None, ge=-1, description="cut each prompt to this many tokens by cutting its document (-1: max_model_len)"
    )
    max_tokens_per_doc: StrictInt | None = Field(None, ge=0, description="cut each document to this many (0: off)")
    priority: StrictInt | None = Field(None, ge=MIN_PRIORITY, le=MAX_PRIORITY, description="lower first (default 0)")

    @model_validator(mode="after")
    def _one_pair_of_sides(self) -> ScoreRequest:
        named = [pair for pair in SIDES if getattr(self, pair[0]) is not None and getattr(self, pair[1]) is not None]
        if not named:
            ways = ", ".join(f"{a}/{b}" for a, b in SIDES)
            raise ValueError(f"name the two sides of the pairs to score as one of {ways}")
        first, second = self.sides()
        if not first or not second:
            raise ValueError("each side needs at least one text")
        if len(first) > 1 and len(first) != len(second):
            raise ValueError(
                f"{len(first)} texts on the first side and {len(second)} on the second: pairs are 1:1, 1:N or N:N"
            )
        return self

    def sides(self) -> tuple[list[str], list[str]]:
        for a, b in SIDES:
            first, second = getattr(self, a), getattr(self, b)
            if first is not None and second is not None:
                return _as_list(first), _as_list(second)
        raise AssertionError("validated: one pair of sides is named")

    def pairs(self) -> list[tuple[str, str]]:
        first, second = self.sides()
        if len(first) == 1:
            return [(first[0], text) for text in second]
        return list(zip(first, second, strict=True))

    def jobs(self) -> list[tuple[RerankJob, list[int]]]:
        """One rerank job per distinct query, with the positions of its pairs in the request."""
        by_query: dict[str, list[int]] = {}
        pairs = self.pairs()
        for i, (query, _) in enumerate(pairs):
            by_query.setdefault(query, []).append(i)
        return [
            (
                RerankJob(
                    query=query,
                    texts=[pairs[i][1] for i in positions],
                    instruction=self.instruction,
                    max_tokens_per_doc=self.max_tokens_per_doc or None,
                    long_document_strategy="truncate",
                    max_prompt_tokens=self.truncate_prompt_tokens,
                    priority=self.priority or 0,
                ),
                positions,
            )
            for query, positions in by_query.items()
        ]


def _as_list(side: str | list[str]) -> list[str]:
    return [side] if isinstance(side, str) else side


class ScoreData(BaseModel):
    index: int = Field(description="the pair's position in the request")
    object: Literal["score"] = "score"
    score: float = Field(description="the probability of relevance, or with use_activation false the logit")


class ScoreUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int = 0


class ScoreResponse(BaseModel):
    id: str
    object: Literal["list"] = "list"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    data: list[ScoreData]
    usage: ScoreUsage


def is_score_body(body: Any) -> bool:
    """A body in the score API's shape (SageMaker's /invocations tells the APIs apart by it)."""
    return isinstance(body, dict) and any(a in body and b in body for a, b in SIDES)
