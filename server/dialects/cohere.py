"""Request and response models of the rerank API (Cohere, Jina and vLLM clients speak it), and the
translation between them and the dialect-free `RerankJob` / `Ranking` (server/core/rerank_job.py).
TEI's dialect is in server/dialects/tei.py."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator

from server.core.rerank_job import Passage, Ranking, RerankJob
from server.dialects.options import RerankOptions


class TextDocument(BaseModel):
    """A document as an object: only `text` is scored; the caller's other fields (ids, metadata)
    come back whole in the result's `document`."""

    model_config = ConfigDict(extra="allow")
    text: StrictStr


class RerankRequest(RerankOptions):
    """Cohere's shape (Jina's and vLLM's too): `documents` as strings or objects."""

    documents: list[StrictStr | TextDocument] = Field(description='the candidates: strings or objects {"text": "..."}')
    return_documents: StrictBool = Field(True, description="echo each document in its result")
    use_activation: StrictBool | None = Field(
        None, description="vLLM's field: false makes relevance_score the model's logit (default: its probability)"
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
            priority=self.priority or 0,
            max_prompt_tokens=self.truncate_prompt_tokens,
        )

    def response(self, ranking: Ranking, request_id: str, model: str) -> RerankResponse:
        """The Cohere-shaped answer: results best first, each with its document as sent (an object
        keeps every field) unless return_documents is false, when `document` is absent; a chunked
        document's best window as `passage`. Serialize with `exclude_unset` (server/http/api_router.py)."""
        results = [self._result(i, ranking) for i in ranking.top(self.top_n)]
        tokens = ranking.prompt_tokens
        usage = RerankUsage(
            prompt_tokens=tokens,
            total_tokens=tokens,
            cached_tokens=ranking.cached_tokens,
            score_cache_hits=ranking.score_cache_hits,
        )
        meta = RerankMeta(
            api_version=ApiVersion(version="2"),
            billed_units=BilledUnits(search_units=search_units(len(self.documents)), total_tokens=tokens),
            tokens=MetaTokens(input_tokens=tokens, output_tokens=0),
        )
        return RerankResponse(id=request_id, model=model, results=results, usage=usage, meta=meta)

    def _result(self, i: int, ranking: Ranking) -> RerankResult:
        """Document i's result: `document` only with return_documents, `passage` only for a document of
        several windows (fields not passed stay unset, and out of the answer)."""
        fields: dict[str, Any] = {}
        if self.return_documents:
            doc = self.documents[i]
            fields["document"] = TextDocument(text=doc) if isinstance(doc, str) else doc
        if ranking.passages[i] is not None:
            fields["passage"] = ranking.passages[i]
        score = ranking.logits[i] if self.use_activation is False else ranking.scores[i]
        return RerankResult(index=i, relevance_score=score, **fields)


def search_units(documents: int) -> int:
    """Cohere's billing unit: one search of up to 100 documents."""
    return max(1, -(-documents // 100))


class RerankResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int = Field(description="the document's position in the request")
    relevance_score: float = Field(description="the model card's score: the probability of 'yes'")
    document: TextDocument | None = Field(None, description="the document as sent (absent: return_documents false)")
    passage: Passage | None = Field(
        None, description="chunk strategy, documents of several windows only: where the best window lies"
    )


class RerankUsage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int = Field(description="tokens of every prompt scored for this request (windows included)")
    total_tokens: int = Field(description="the same (nothing is generated)")
    cached_tokens: int = Field(description="of the pairs the engine scored: tokens read from vLLM's prefix cache")
    score_cache_hits: int = Field(
        description="pairs answered from the score cache, not the engine (a chunked document's windows each count)"
    )


class ApiVersion(BaseModel):
    version: str


class BilledUnits(BaseModel):
    search_units: int = Field(description="searches of up to 100 documents, as Cohere counts them")
    total_tokens: int = Field(description="as usage.total_tokens (LiteLLM's per-token rerank billing reads it)")


class MetaTokens(BaseModel):
    input_tokens: int = Field(description="as usage.prompt_tokens")
    output_tokens: int


class RerankMeta(BaseModel):
    """Cohere's `meta` block, as the Cohere SDKs and LiteLLM read usage."""

    api_version: ApiVersion
    billed_units: BilledUnits
    tokens: MetaTokens


class RerankResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="the request id (X-Request-Id)")
    model: str
    results: list[RerankResult]
    usage: RerankUsage
    meta: RerankMeta


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    owned_by: str = "qwen3-rerank-server"
    max_model_len: int


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]
