"""Hugging Face text-embeddings-inference's (TEI) rerank dialect, on the same routes as Cohere's.

A body with `texts` (and no `documents`) is TEI's: `{"query", "texts", "truncate",
"truncation_direction", "raw_scores", "return_text"}` in, a bare array `[{"index", "score",
"text"?}]` out, best first, and errors as `{"error": "...", "error_type": "..."}` with the HTTP
status this server uses for that kind of error. Haystack's HuggingFaceTEIRanker, LlamaIndex's
TextEmbeddingInference, rerankers' TEI provider, LiteLLM's huggingface/ provider, Dify, RAGFlow,
Elasticsearch and Milvus speak it. `GET /info` is TEI's description of the served model.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, TypeAdapter, field_validator
from starlette.responses import Response

from server.errors import ERROR_STATUS, ErrorKind, error_response
from server.protocol import RerankOptions
from server.rerank_job import Ranking, RerankJob

# this server's error kind -> TEI's error_type
TEI_ERROR_TYPE: dict[ErrorKind, str] = {
    ErrorKind.INVALID_REQUEST: "Validation",
    ErrorKind.AUTHENTICATION: "Validation",
    ErrorKind.NOT_FOUND: "Validation",
    ErrorKind.METHOD_NOT_ALLOWED: "Validation",
    ErrorKind.PAYLOAD_TOO_LARGE: "Validation",
    ErrorKind.VALIDATION: "Validation",
    ErrorKind.EMPTY: "Empty",
    ErrorKind.OVERLOADED: "Overloaded",
    ErrorKind.INTERNAL: "Backend",
    ErrorKind.SERVICE_UNAVAILABLE: "Unhealthy",
    ErrorKind.TIMEOUT: "Backend",
}


def is_tei_body(data: Any) -> bool:
    """TEI's shape is told apart by its `texts` field (Cohere, Jina and vLLM send `documents`)."""
    return isinstance(data, dict) and "texts" in data and "documents" not in data


HEAD_BYTES = 64 * 1024  # of a body that is not parsed (too large, not JSON): what tells its dialect


def is_tei_head(head: bytes) -> bool:
    """For a body that cannot be parsed (over the size limit, unread after a 401, not valid JSON):
    its first bytes name `texts` and not `documents`."""
    return b'"texts"' in head and b'"documents"' not in head


class TeiRerankRequest(RerankOptions):
    """TEI's shape: `texts` as strings; this server's own fields (instruction, long documents) as
    in Cohere's shape (server/protocol.py's RerankOptions)."""

    texts: list[StrictStr] = Field(description="the candidates, as strings")
    truncate: StrictBool | None = Field(
        None, description="true or absent: a text that does not fit is cut; false: it is refused (422)"
    )
    truncation_direction: Literal["right", "left"] = Field(
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
        )

    def response(self, ranking: Ranking) -> list[TeiRank]:
        """TEI's answer, best first (serialize with `exclude_unset`: `text` only with return_text)."""
        scores = ranking.logits if self.raw_scores else ranking.scores
        out: list[TeiRank] = []
        for i in ranking.top(self.top_n):
            entry: dict[str, Any] = {"index": i, "score": scores[i]}
            if self.return_text:
                entry["text"] = self.texts[i]
            out.append(TeiRank.model_construct(**entry))
        return out


class TeiRank(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int = Field(description="the text's position in the request")
    score: float = Field(description="the probability of 'yes', or its logit with raw_scores")
    text: str | None = Field(None, description="the text (return_text only)")


TEI_RANKS = TypeAdapter(list[TeiRank])


class TeiError(BaseModel):
    """TEI's error body, on requests in TEI's shape."""

    error: str
    error_type: str


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


def dialect_error_response(tei: bool, kind: ErrorKind, message: str, headers: dict[str, str] | None = None) -> Response:
    """An error in the dialect of the request: TEI's body for a TEI request, else the one shape."""
    return tei_error_response(kind, message, headers) if tei else error_response(kind, message, headers)


def tei_error_response(kind: ErrorKind, message: str, headers: dict[str, str] | None = None) -> Response:
    status = ERROR_STATUS[kind]
    body = TeiError(error=message, error_type=TEI_ERROR_TYPE.get(kind, "Backend")).model_dump_json()
    return Response(body, status_code=status, media_type="application/json", headers=headers)
