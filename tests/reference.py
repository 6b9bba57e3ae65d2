"""The Qwen3-Reranker model card's transformers code, kept as the card writes it.

Only the model path, dtype and max_length are parameters; `input_ids` exposes the unpadded ids
that `process_inputs` feeds the model, so tests can compare token ids as well as scores.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def format_instruction(instruction, query, doc):
    if instruction is None:
        instruction = "Given a web search query, retrieve relevant passages that answer the query"
    output = f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"
    return output


class CardReranker:
    def __init__(self, model_dir: str, dtype: torch.dtype = torch.float32, max_length: int = 8192) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
        self.token_false_id = self.tokenizer.convert_tokens_to_ids("no")
        self.token_true_id = self.tokenizer.convert_tokens_to_ids("yes")
        self.max_length = max_length
        self.prefix_tokens = self.tokenizer.encode(PREFIX, add_special_tokens=False)
        self.suffix_tokens = self.tokenizer.encode(SUFFIX, add_special_tokens=False)

    def input_ids(self, pairs: list[str]) -> list[list[int]]:
        inputs = self.tokenizer(
            pairs,
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=self.max_length - len(self.prefix_tokens) - len(self.suffix_tokens),
        )
        return [self.prefix_tokens + ele + self.suffix_tokens for ele in inputs["input_ids"]]

    def process_inputs(self, pairs: list[str]):
        inputs = {"input_ids": self.input_ids(pairs)}
        return self.tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=self.max_length)

    @torch.no_grad()
    def compute_logits(self, inputs) -> list[float]:
        # The card's `model(**inputs).logits[:, -1, :]`, with the LM head run on the last position
        # only (as transformers' generation does): the same numbers without a vocabulary-wide
        # matmul per token (at the 8B width, 636 GFLOP for one 512-token prompt).
        batch_scores = self.model(**inputs, logits_to_keep=1).logits[:, -1, :]
        true_vector = batch_scores[:, self.token_true_id]
        false_vector = batch_scores[:, self.token_false_id]
        batch_scores = torch.stack([false_vector, true_vector], dim=1)
        batch_scores = torch.nn.functional.log_softmax(batch_scores, dim=1)
        return batch_scores[:, 1].exp().tolist()

    def scores(self, query: str, documents: list[str], instruction: str | None = None) -> list[float]:
        pairs = [format_instruction(instruction, query, doc) for doc in documents]
        # One pair a batch: left padding in fp32 is exact, but a batch of one needs no mask at all.
        return [self.compute_logits(self.process_inputs([pair]))[0] for pair in pairs]

    def scores_of_ids(self, prompts: list[list[int]]) -> list[float]:
        """The card's score of prompts given as token ids (PREFIX + BODY + SUFFIX each)."""
        return [self.compute_logits({"input_ids": torch.tensor([ids])})[0] for ids in prompts]


class SeqClsReranker(CardReranker):
    """A converted Qwen3-Reranker (Qwen3ForSequenceClassification) as transformers runs it, on the
    card's prompt: sigmoid of its one logit (what Infinity and TEI compute for such a model)."""

    def __init__(self, model_dir: str, dtype: torch.dtype = torch.float32, max_length: int = 8192) -> None:
        from transformers import AutoModelForSequenceClassification

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=dtype).eval()
        self.max_length = max_length
        self.prefix_tokens = self.tokenizer.encode(PREFIX, add_special_tokens=False)
        self.suffix_tokens = self.tokenizer.encode(SUFFIX, add_special_tokens=False)

    @torch.no_grad()
    def compute_logits(self, inputs) -> list[float]:
        return torch.sigmoid(self.model(**inputs).logits[:, 0]).tolist()


class CrossEncoderReference:
    """sentence-transformers' CrossEncoder.predict for a one-label model, written out: the pair
    through the tokenizer (truncation=True, i.e. longest_first, at max_length), the model's logit,
    then sigmoid."""

    def __init__(self, model_dir: str, max_length: int = 512) -> None:
        from transformers import AutoModelForSequenceClassification

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.max_length = max_length

    @torch.no_grad()
    def scores(self, query: str, documents: list[str], instruction: str | None = None) -> list[float]:
        assert instruction is None, "a cross-encoder takes no instruction"
        out = []
        for doc in documents:
            features = self.tokenizer(
                [[query, doc]], padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            out.append(torch.sigmoid(self.model(**features).logits[0, 0]).item())
        return out
