"""A classic cross-encoder's prompts as token ids: `(query, document)` in its tokenizer's own pair
template, as sentence-transformers' `CrossEncoder` encodes it (`[CLS] query [SEP] document [SEP]`
for BERT, `<s> query </s></s> document </s>` for XLM-RoBERTa).

The template is read once per request from the tokenizer's encoding of (query, placeholder): the
ids before and after the placeholder's tokens, and where token type 1 (segment B) starts, if the
tokenizer returns token types at all (a tokenizer whose model_input_names lack them gets none: type
0 throughout, as in transformers). A
document is tokenized on its own: a pair's second text is pre-tokenized apart from the first, so
its tokens are the same. Only the document is cut, never the query or the special tokens.
`CrossEncoder` truncates `longest_first`, which cuts only the document as long as it is the longer
of the two; a query that leaves no room for a document is refused here rather than cut.
"""

from __future__ import annotations

from typing import Any

from server.core.served_model import ModelKind
from server.engine.model_kind import ModelInfo
from server.rerank.prompt import BasePromptBuilder, Frame, PromptBuilder, QueryTooLongError

PLACEHOLDER = "placeholder"


class CrossEncoderPromptBuilder(BasePromptBuilder):
    takes_instruction = False

    def __init__(self, tokenizer: Any, max_model_len: int) -> None:
        super().__init__(tokenizer, max_model_len)
        self.pair_tokenizer = tokenizer  # called with a (text, text_pair) pair: transformers' own signature
        self.placeholder_ids: list[int] = tokenizer.encode(PLACEHOLDER, add_special_tokens=False)

    def frame(self, query: str, instruction: str | None) -> Frame:
        # Token types as the tokenizer returns them by default (its model_input_names), as transformers
        # and CrossEncoder encode a pair: none (type 0 throughout) where it returns none.
        pair = self.pair_tokenizer(query, PLACEHOLDER)
        ids: list[int] = pair["input_ids"]
        sequence = pair.sequence_ids()
        first = sequence.index(1)
        after = first + len(self.placeholder_ids)
        assert ids[first:after] == self.placeholder_ids and 1 not in sequence[after:], "a pair template of one B"
        types: list[int] = pair.get("token_type_ids") or []
        second_segment = types.index(1) if 1 in types else None
        start, end = ids[:first], ids[after:]
        doc_budget = self.max_model_len - len(start) - len(end)
        if doc_budget < 1:
            raise QueryTooLongError(
                f"the query takes {sequence.count(0)} tokens, leaving no room for a document within "
                f"max_model_len={self.max_model_len}; shorten the query"
            )
        return Frame(start, end, doc_budget, second_segment)


def builder_for(model: ModelInfo, tokenizer: Any, max_model_len: int) -> BasePromptBuilder:
    """The prompts of a model of this kind: the card's for both Qwen3-Reranker kinds, the tokenizer's
    own pair template for a cross-encoder."""
    if model.kind is ModelKind.CROSS_ENCODER:
        return CrossEncoderPromptBuilder(tokenizer, max_model_len)
    return PromptBuilder(tokenizer, max_model_len)
