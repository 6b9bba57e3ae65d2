"""Request and response models of the rerank API (Cohere, Jina and vLLM clients speak it), and the
translation between them and the dialect-free `RerankJob` / `Ranking` (server/rerank_job.py).
TEI's dialect is in server/tei_protocol.py."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

from server.rerank_job import Ranking, RerankJob


class TextDocument(BaseModel):
    """A document as an object: only `text` is scored; the caller's other fields (ids, metadata)
    come back whole in the result's `document`."""

    model_config = ConfigDict(extra="allow")
    text: StrictStr


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    query: StrictStr = Field(min_length=1, description="the search query")
    documents: list[StrictStr | TextDocument] = Field(description='the candidates: strings or objects {"text": "..."}')
    top_n: StrictInt | None = Field(None, ge=1, description="return only the best n (default: all)")
    return_documents: StrictBool = Field(True, description="echo each document's text in its result")
    instruction: StrictStr | None = Field(
        None, min_length=1, description="task instruction (default: the model card's web-search instruction)"
    )
    max_tokens_per_doc: StrictInt | None = Field(
        None,
        ge=1,
        description="truncate: cut each document to this many tokens; chunk: the window length "
        "(default: what the prompt leaves for the document)",
    )
    model: StrictStr | None = Field(None, description="if given, must name the served model")
    long_document_strategy: Literal["truncate", "chunk"] | None = Field(
        None,
        description="truncate: a long document loses its tail (the model card); chunk: it is scored as "
        "overlapping windows and keeps the best window's score (default: the server's "
        "--long-document-strategy, or chunk when max_chunks_per_doc is given)",
    )
    max_chunks_per_doc: StrictInt | None = Field(
        None, ge=1, description="chunk: score at most this many windows of a document, the first ones"
    )

    @field_validator("documents", mode="before")
    @classmethod
    def _one_message_per_document(cls, value: Any) -> Any:
        """One clear message for a bad document instead of one per member of the union."""
        if isinstance(value, list):
            for i, doc in enumerate(value):
                if not isinstance(doc, str) and not (isinstance(doc, dict) and isinstance(doc.get("text"), str)):
                    got = "an object without a string 'text'" if isinstance(doc, dict) else type(doc).__name__
                    got = "null" if doc is None else got
                    raise ValueError(f'documents[{i}] must be a string or an object {{"text": "..."}}, got {got}')
        return value

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]

    def to_job(self) -> RerankJob:
        return RerankJob(
            query=self.query,
            texts=self.texts(),
            instruction=self.instruction,
            max_tokens_per_doc=self.max_tokens_per_doc,
            long_document_strategy=self.long_document_strategy,
            max_chunks_per_doc=self.max_chunks_per_doc,
            model=self.model,
        )

    def response(self, ranking: Ranking, request_id: str, model: str) -> dict[str, Any]:
        """The Cohere-shaped answer: results best first, each with its document as sent (an object
        keeps every field) unless return_documents is false, when `document` is absent."""
        results: list[dict[str, Any]] = []
        for i in ranking.top(self.top_n):
            result: dict[str, Any] = {"index": i, "relevance_score": ranking.scores[i]}
            if self.return_documents:
                doc = self.documents[i]
                result["document"] = {"text": doc} if isinstance(doc, str) else doc.model_dump()
            if ranking.passages[i] is not None:
                result["passage"] = dataclasses.asdict(ranking.passages[i])
            results.append(result)
        return {
            "id": request_id,
            "model": model,
            "results": results,
            "usage": {
                "prompt_tokens": ranking.prompt_tokens,
                "total_tokens": ranking.prompt_tokens,
                "cached_tokens": ranking.cached_tokens,
            },
        }


class RerankDocument(BaseModel):
    """The document as sent: `text`, and any other fields of an object document."""

    model_config = ConfigDict(extra="allow")
    text: str


class Passage(BaseModel):
    """Where the best window of a chunked document lies: `document.text[start:end]`."""

    start: int = Field(description="character offset of the window's start in the document")
    end: int = Field(description="character offset just past the window's end")
    chunk: int = Field(description="the window's number, from 0")
    chunks: int = Field(description="how many windows of the document were scored")


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None
    passage: Passage | None = Field(None, description="chunk strategy, documents of several windows only")


class RerankUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    cached_tokens: int = Field(description="prompt tokens served from vLLM's prefix cache")


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult]
    usage: RerankUsage


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    owned_by: str = "qwen3-rerank-server"
    max_model_len: int


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: int


class ErrorResponse(BaseModel):
    error: ErrorDetail
