"""Hugging Face text-embeddings-inference's (TEI) rerank dialect, on the same routes as Cohere's.

A body with `texts` (and no `documents`) is TEI's: `{"query", "texts", "truncate",
"truncation_direction", "raw_scores", "return_text"}` in, a bare array `[{"index", "score",
"text"?}]` out, best first, and errors as `{"error": "...", "error_type": "..."}` with the HTTP
status this server uses for that kind of error. Haystack's HuggingFaceTEIRanker, LlamaIndex's
TextEmbeddingInference, rerankers' TEI provider, LiteLLM's huggingface/ provider, Dify, RAGFlow,
Elasticsearch and Milvus speak it. `GET /info` is TEI's description of the served model.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, TypeAdapter, field_validator

from server.core.rerank_job import Direction, Ranking, RerankJob
from server.dialects.options import RerankOptions


class TeiRerankRequest(RerankOptions):
    """TEI's shape: `texts` as strings; this server's own fields (instruction, long documents) as
    in Cohere's shape (server/dialects/options.py's RerankOptions)."""

    texts: list[StrictStr] = Field(description="the candidates, as strings")
    truncate: StrictBool | None = Field(
        None, description="true or absent: a text that does not fit is cut; false: it is refused (422)"
    )
    truncation_direction: Direction = Field(
        "right", description="Right: keep a long text's start (the model card); Left: keep its end"
    )
    raw_scores: StrictBool = Field(False, description="score is the logit log(p / (1 - p)) instead of p")
    return_text: StrictBool = Field(False, description="echo each text in its entry")
    model: StrictStr | None = Field(None, description="ignored, as TEI does (it serves one model)")

    @field_validator("truncation_direction", mode="before")
    @classmethod
    def _any_case(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    def to_job(self) -> RerankJob:
        return RerankJob(
            query=self.query,
            texts=self.texts,
            instruction=self.instruction,
            max_tokens_per_doc=self.max_tokens_per_doc,
            long_document_strategy=self.long_document_strategy,
            max_chunks_per_doc=self.max_chunks_per_doc,
            truncate=self.truncate,
            truncation_direction=self.truncation_direction,
            priority=self.priority or 0,
            max_prompt_tokens=self.truncate_prompt_tokens,
        )

    def response(self, ranking: Ranking) -> list[TeiRank]:
        """TEI's answer, best first (serialize with `exclude_unset`: `text` only with return_text)."""
        scores = ranking.logits if self.raw_scores else ranking.scores
        if self.return_text:
            return [TeiRank(index=i, score=scores[i], text=self.texts[i]) for i in ranking.top(self.top_n)]
        return [TeiRank(index=i, score=scores[i]) for i in ranking.top(self.top_n)]


class TeiRank(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int = Field(description="the text's position in the request")
    score: float = Field(description="the probability of 'yes', or its logit with raw_scores")
    text: str | None = Field(None, description="the text (return_text only)")


TEI_RANKS = TypeAdapter(list[TeiRank])


class TeiInfo(BaseModel):
    """`GET /info`, TEI's fields with this server's values."""

    model_id: str
    model_sha: str | None
    model_dtype: str
    model_type: dict[str, Any] = Field(
        default_factory=lambda: {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}
    )
    max_concurrent_requests: int = Field(
        description="TEI's name for --max-pairs-in-flight: pairs in the engine at once"
    )
    max_input_length: int = Field(description="tokens of one prompt (--max-model-len)")
    max_batch_tokens: int = Field(description="tokens of one engine step")
    max_batch_requests: int | None = None
    max_client_batch_size: int = Field(description="texts in one request (--max-documents)")
    auto_truncate: bool = True
    tokenization_workers: int = Field(description="processes that tokenize (--api-processes)")
    version: str
