"""The Qwen3-Reranker prompt, built from token ids.

The model card scores `PREFIX + BODY + SUFFIX`, where PREFIX and SUFFIX are tokenized on their
own and BODY (`<Instruct>: ...\\n<Query>: ...\\n<Document>: {doc}`) is tokenized and truncated to
`max_length - len(PREFIX) - len(SUFFIX)` tokens. We produce the very same ids, but tokenize the
shared head of BODY once per request and the documents on their own (with tiktoken running the
tokenizer's own BPE, `server/rerank/fast_tokenizer.py`, where it can; else one batched tokenizer call):

    BODY ids == ids("<Instruct>: ...\\n<Query>: ...\\n<Document>:") + ids(" " + doc)

holds because the byte-level pre-tokenizer always ends a token at ">:" before the space, so the
space that starts the document chunk opens the same pre-token in both tokenizations
(`tests/test_prompt.py` checks it against the card's code, also on random text).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from server.core.errors import ErrorKind, ServiceError
from server.core.rerank_job import Direction, RerankJob
from server.core.settings import Settings
from server.rerank.fast_tokenizer import FastEncoder
from server.rerank.windows import Window, window_spans

PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and "
    'the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
HEAD_TEMPLATE = "<Instruct>: {instruction}\n<Query>: {query}\n<Document>:"
DOC_TEMPLATE = " {document}"


class Tokenizer(Protocol):
    def __call__(
        self, text: list[str], add_special_tokens: bool = ..., return_offsets_mapping: bool = ...
    ) -> dict[str, list[Any]]: ...

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


class QueryTooLongError(ValueError):
    """The instruction and query leave no room for any document token."""


@dataclass(frozen=True)
class Prompts:
    """Token ids of every prompt of one request: one per document, in document order, or with
    `windows` (long_document_strategy "chunk") one per window, document after document."""

    token_ids: list[list[int]]
    truncated: list[bool]  # per document: some of it is not scored
    windows: list[list[Window]] | None = None  # chunked: each document's windows, in prompt order
    doc_budget: int | None = None  # truncate: the most tokens of a document that are scored
    second_segment: int | None = None  # a cross-encoder's: where token type 1 starts in every prompt

    @property
    def num_tokens(self) -> int:
        return sum(len(ids) for ids in self.token_ids)

    @property
    def priorities(self) -> list[int] | None:
        """Engine priority of each prompt: a window's number in its document (None: all 0)."""
        if self.windows is None:
            return None
        return [k for doc_windows in self.windows for k in range(len(doc_windows))]


@dataclass(frozen=True)
class Frame:
    """What every prompt of one request has around a document's tokens, and how many of those fit."""

    start: list[int]
    end: list[int]
    doc_budget: int
    second_segment: int | None = None  # where token type 1 starts (a cross-encoder's segment B)


class BasePromptBuilder:
    """Prompts of (query, document) pairs as token ids: the request's `Frame` around each document's
    tokens (or each window's). Only a document's own tokens are cut, on a token boundary; the
    subclass says what the frame is and how a document is written before it is tokenized."""

    doc_template = "{document}"  # the document's text as tokenized
    takes_instruction = True

    def __init__(self, tokenizer: Tokenizer, max_model_len: int) -> None:
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.fast: FastEncoder | None = None

    def frame(self, query: str, instruction: str | None) -> Frame:
        raise NotImplementedError

    def _frame(
        self, query: str, instruction: str | None, max_tokens_per_doc: int | None, max_prompt_tokens: int | None = None
    ) -> Frame:
        """The frame, its document budget cut to max_tokens_per_doc and to what max_prompt_tokens (vLLM's
        truncate_prompt_tokens; -1: off) leaves after the frame: only the document is ever cut."""
        frame = self.frame(query, instruction)
        budget = frame.doc_budget
        if max_tokens_per_doc is not None:
            budget = min(budget, max_tokens_per_doc)
        if max_prompt_tokens is not None and max_prompt_tokens != -1:
            around = len(frame.start) + len(frame.end)
            if max_prompt_tokens - around < 1:
                raise QueryTooLongError(
                    f"truncate_prompt_tokens={max_prompt_tokens} leaves no room for a document: the prompt around "
                    f"it (instruction, query, template) takes {around} tokens; this server cuts only documents"
                )
            budget = min(budget, max_prompt_tokens - around)
        if budget < frame.doc_budget:
            return Frame(frame.start, frame.end, budget, frame.second_segment)
        return frame

    def encode_documents(self, texts: list[str]) -> list[list[int]]:
        texts = [self.doc_template.format(document=t) for t in texts]
        if self.fast is not None:
            return self.fast.encode_batch(texts)
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def build(
        self,
        query: str,
        documents: list[str],
        instruction: str | None = None,
        max_tokens_per_doc: int | None = None,
        truncation_direction: Direction = "right",
        max_prompt_tokens: int | None = None,
    ) -> Prompts:
        """One prompt per document; a document longer than the budget loses its tail (the card),
        or with truncation_direction "left" its beginning (its last tokens are kept). Only the
        document's own tokens are cut, on a token boundary: never the prefix, instruction, query or
        suffix."""
        frame = self._frame(query, instruction, max_tokens_per_doc, max_prompt_tokens)
        start, end, budget = frame.start, frame.end, frame.doc_budget
        if not documents:
            return Prompts([], [], doc_budget=budget, second_segment=frame.second_segment)
        encoded = self.encode_documents(documents)
        if truncation_direction == "left":
            token_ids = [start + doc[max(0, len(doc) - budget) :] + end for doc in encoded]
        else:
            token_ids = [start + doc[:budget] + end for doc in encoded]
        truncated = [len(doc) > budget for doc in encoded]
        return Prompts(token_ids, truncated, doc_budget=budget, second_segment=frame.second_segment)

    def build_chunked(
        self,
        query: str,
        documents: list[str],
        instruction: str | None = None,
        max_tokens_per_doc: int | None = None,
        max_chunks: int = 64,
        overlap_tokens: int | None = None,
        max_prompt_tokens: int | None = None,
    ) -> Prompts:
        """One prompt per window of each document (see `window_spans`); a document that fits the
        budget is one window whose prompt is exactly `build`'s.

        max_tokens_per_doc: window length (default and at most: the budget the prompt leaves for the
        document); overlap_tokens: default 1/8 of the window, at most half of it.
        """
        frame = self._frame(query, instruction, max_tokens_per_doc, max_prompt_tokens)
        length = frame.doc_budget
        overlap = min(length // 8 if overlap_tokens is None else overlap_tokens, length // 2)
        if not documents:
            return Prompts([], [], [], second_segment=frame.second_segment)
        texts = [self.doc_template.format(document=d) for d in documents]
        encoded = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        shift = self.doc_template.index("{document}")  # characters before the document in its template
        token_ids: list[list[int]] = []
        windows: list[list[Window]] = []
        truncated: list[bool] = []
        for ids, offsets in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True):
            spans = window_spans(offsets, length, overlap, max_chunks)
            doc_windows = [
                Window(first, end, max(0, offsets[first][0] - shift), max(0, offsets[end - 1][1] - shift))
                for first, end in spans
            ]
            token_ids += [frame.start + ids[w.first_token : w.end_token] + frame.end for w in doc_windows]
            windows.append(doc_windows)
            truncated.append(spans[-1][1] < len(ids))
        return Prompts(token_ids, truncated, windows, second_segment=frame.second_segment)


class PromptBuilder(BasePromptBuilder):
    """The card's prompt as token ids (Qwen3-Reranker, original or converted to a sequence
    classifier); prefix and suffix are tokenized once."""

    doc_template = DOC_TEMPLATE

    def __init__(self, tokenizer: Tokenizer, max_model_len: int, fast: bool = True) -> None:
        super().__init__(tokenizer, max_model_len)
        # Documents through tiktoken where that gives the same ids (server/rerank/fast_tokenizer.py).
        self.fast = FastEncoder.from_tokenizer(tokenizer) if fast else None
        self.prefix_ids: list[int] = tokenizer.encode(PREFIX, add_special_tokens=False)
        self.suffix_ids: list[int] = tokenizer.encode(SUFFIX, add_special_tokens=False)
        # The card's budget for BODY tokens.
        self.body_budget = max_model_len - len(self.prefix_ids) - len(self.suffix_ids)
        if self.body_budget < 2:
            raise ValueError(f"max_model_len={max_model_len} is too small for the reranker prompt")

    def head_ids(self, query: str, instruction: str | None) -> list[int]:
        head = HEAD_TEMPLATE.format(instruction=instruction or DEFAULT_INSTRUCTION, query=query)
        if self.fast is not None:
            # the same ids as the tokenizer's, at a sixth of its CPU (server/rerank/fast_tokenizer.py)
            return self.fast.encode_batch([head])[0]
        return self.tokenizer.encode(head, add_special_tokens=False)

    def frame(self, query: str, instruction: str | None) -> Frame:
        head = self.head_ids(query, instruction)
        doc_budget = self.body_budget - len(head)
        if doc_budget < 1:
            raise QueryTooLongError(
                f"the query and instruction take {len(head)} tokens, leaving no room for a document "
                f"within max_model_len={self.max_model_len} (at most {self.body_budget - 1} tokens "
                f"for instruction and query); shorten the query"
            )
        return Frame(self.prefix_ids + head, self.suffix_ids, doc_budget)


def prompts_for(builder: BasePromptBuilder, job: RerankJob, settings: Settings) -> Prompts:
    """The job's prompts under its long-document strategy: the request's, or the server's default
    (chunk when only max_chunks_per_doc is sent, as Cohere's v1 SDK does)."""
    strategy = job.long_document_strategy
    if strategy is None:
        strategy = "chunk" if job.max_chunks_per_doc is not None else settings.long_document_strategy
    if strategy == "truncate":
        return builder.build(
            job.query,
            job.texts,
            job.instruction,
            job.max_tokens_per_doc,
            job.truncation_direction,
            max_prompt_tokens=job.max_prompt_tokens,
        )
    max_chunks = job.max_chunks_per_doc or settings.max_chunks_per_doc
    if max_chunks > settings.max_chunks_per_doc:
        raise ServiceError(
            ErrorKind.VALIDATION,
            f"max_chunks_per_doc: at most {settings.max_chunks_per_doc} on this server, got {max_chunks}",
        )
    return builder.build_chunked(
        job.query,
        job.texts,
        job.instruction,
        job.max_tokens_per_doc,
        max_chunks,
        settings.chunk_overlap_tokens,
        max_prompt_tokens=job.max_prompt_tokens,
    )
