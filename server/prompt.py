"""The Qwen3-Reranker prompt, built from token ids.

The model card scores `PREFIX + BODY + SUFFIX`, where PREFIX and SUFFIX are tokenized on their
own and BODY (`<Instruct>: ...\\n<Query>: ...\\n<Document>: {doc}`) is tokenized and truncated to
`max_length - len(PREFIX) - len(SUFFIX)` tokens. We produce the very same ids, but tokenize the
shared head of BODY once per request and all documents in one batched call:

    BODY ids == ids("<Instruct>: ...\\n<Query>: ...\\n<Document>:") + ids(" " + doc)

holds because the byte-level pre-tokenizer always ends a token at ">:" before the space, so the
space that starts the document chunk opens the same pre-token in both tokenizations
(`tests/test_prompt.py` checks it against the card's code, also on random text).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and "
    'the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
HEAD_TEMPLATE = "<Instruct>: {instruction}\n<Query>: {query}\n<Document>:"
DOC_TEMPLATE = " {document}"
YES_TOKEN_ID = 9693
NO_TOKEN_ID = 2152


class Tokenizer(Protocol):
    def __call__(self, text: list[str], add_special_tokens: bool = ...) -> dict[str, list[list[int]]]: ...

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


class QueryTooLongError(ValueError):
    """The instruction and query leave no room for any document token."""


@dataclass(frozen=True)
class Prompts:
    """Token ids of every (query, document) prompt of one request, in document order."""

    token_ids: list[list[int]]
    truncated: list[bool]

    @property
    def num_tokens(self) -> int:
        return sum(len(ids) for ids in self.token_ids)


class PromptBuilder:
    """Builds the card's prompt as token ids; prefix and suffix are tokenized once."""

    def __init__(self, tokenizer: Tokenizer, max_model_len: int) -> None:
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.prefix_ids: list[int] = tokenizer.encode(PREFIX, add_special_tokens=False)
        self.suffix_ids: list[int] = tokenizer.encode(SUFFIX, add_special_tokens=False)
        # The card's budget for BODY tokens.
        self.body_budget = max_model_len - len(self.prefix_ids) - len(self.suffix_ids)
        if self.body_budget < 2:
            raise ValueError(f"max_model_len={max_model_len} is too small for the reranker prompt")

    def head_ids(self, query: str, instruction: str | None) -> list[int]:
        head = HEAD_TEMPLATE.format(instruction=instruction or DEFAULT_INSTRUCTION, query=query)
        return self.tokenizer.encode(head, add_special_tokens=False)

    def build(
        self,
        query: str,
        documents: list[str],
        instruction: str | None = None,
        max_tokens_per_doc: int | None = None,
    ) -> Prompts:
        head = self.head_ids(query, instruction)
        doc_budget = self.body_budget - len(head)
        if doc_budget < 1:
            raise QueryTooLongError(
                f"the query and instruction take {len(head)} tokens, leaving no room for a document "
                f"within max_model_len={self.max_model_len} (at most {self.body_budget - 1} tokens "
                f"for instruction and query); shorten the query"
            )
        if max_tokens_per_doc is not None:
            doc_budget = min(doc_budget, max_tokens_per_doc)
        if not documents:
            return Prompts([], [])
        encoded = self.tokenizer([DOC_TEMPLATE.format(document=d) for d in documents], add_special_tokens=False)[
            "input_ids"
        ]
        start = self.prefix_ids + head
        token_ids = [start + doc[:doc_budget] + self.suffix_ids for doc in encoded]
        return Prompts(token_ids, [len(doc) > doc_budget for doc in encoded])
