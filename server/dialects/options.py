"""The rerank request fields Cohere's and TEI's dialects share: the query, top_n, this server's own
instruction and long-document options, vLLM's truncate_prompt_tokens, and the priority."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from server.core.rerank_job import MAX_PRIORITY, MIN_PRIORITY, Strategy


class RerankOptions(BaseModel):
    """The request fields both rerank dialects take (Cohere's in server/dialects/cohere.py, TEI's in
    server/dialects/tei.py)."""

    model_config = ConfigDict(extra="ignore")

    query: StrictStr = Field(min_length=1, description="the search query")
    top_n: StrictInt | None = Field(None, ge=1, description="return only the best n (default: all)")
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
    long_document_strategy: Strategy | None = Field(
        None,
        description="truncate: a long document loses its tail (the model card); chunk: it is scored as "
        "overlapping windows and keeps the best window's score (default: the server's "
        "--long-document-strategy, or chunk when max_chunks_per_doc is given)",
    )
    max_chunks_per_doc: StrictInt | None = Field(
        None, ge=1, description="chunk: score at most this many windows of a document, the first ones"
    )
    truncate_prompt_tokens: StrictInt | None = Field(
        None,
        ge=-1,
        description="vLLM's field: each prompt at most this many tokens, reached by cutting its document (never the "
        "instruction, query or template); -1: max_model_len",
    )
    priority: StrictInt | None = Field(
        None,
        ge=MIN_PRIORITY,
        le=MAX_PRIORITY,
        description="lower is handled earlier (default 0, or the API key's default); above 0 is bulk work, "
        "which interactive requests overtake in the engine and whose pairs never crowd them out of admission "
        "(docs/api.md, Priority lanes)",
    )
