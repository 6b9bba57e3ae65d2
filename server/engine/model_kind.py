"""What kind of reranker a model is, told from its own config.json (`--model-kind` overrides it).

- `qwen3-reranker`: the original Qwen3-Reranker, a causal LM (`Qwen3ForCausalLM`) whose score is
  its `yes` logit against `no`; vLLM runs it as a one-row classifier (QWEN3_RERANKER_HF_OVERRIDES in
  server/engine/engine_args.py) on the card's prompt (server/rerank/prompt.py).
- `qwen3-seq-cls`: a converted Qwen3-Reranker (`Qwen3ForSequenceClassification` with one label,
  the yes-minus-no row, e.g. tomaarsen/Qwen3-Reranker-0.6B-seq-cls): the same prompt, its own head.
- `cross-encoder`: a classic cross-encoder, an encoder's `*ForSequenceClassification` with one
  label (BERT, XLM-RoBERTa, ModernBERT...): the pair in its tokenizer's own template
  (server/rerank/cross_encoder.py) and no instruction.

The score is the activation sentence-transformers applies to the one logit: sigmoid, unless the
config names Identity (`sentence_transformers.activation_fn`, or the older
`sbert_ce_default_activation_function`), then the logit itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.core.served_model import ModelKind, ServedModel
from server.engine.model_files import read_config

# model_type of the encoders vLLM runs as sequence classifiers; a roberta-like one counts positions
# from its padding id + 1, so it takes that many fewer tokens than max_position_embeddings
ENCODER_TYPES = {"bert", "roberta", "xlm-roberta", "camembert", "modernbert", "electra", "distilbert", "new"}
POSITIONS_AFTER_PADDING = {"roberta", "xlm-roberta", "camembert"}


@dataclass(frozen=True)
class ModelInfo:
    kind: ModelKind
    identity_activation: bool = False  # the score is the logit itself, not sigmoid(logit)
    max_positions: int | None = None  # the most tokens the model takes, if its positions are learned

    def max_model_len(self, requested: int) -> int:
        """--max-model-len, or the model's own limit if that is smaller (512 for most cross-encoders)."""
        return requested if self.max_positions is None else min(requested, self.max_positions)


QWEN3_RERANKER = ModelInfo(ModelKind.QWEN3_RERANKER)


def model_info(served: ServedModel) -> ModelInfo:
    """The served model's kind, from its config.json and --model-kind."""
    kind = None if served.model_kind is ModelKind.AUTO else served.model_kind
    return info_from_config(read_config(served.model), kind)


def info_from_config(config: dict[str, Any], kind: ModelKind | None = None) -> ModelInfo:
    architectures = config.get("architectures") or [""]
    architecture, model_type = str(architectures[0]), str(config.get("model_type", ""))
    if kind is None:
        kind = detect_kind(architecture, model_type)
    if kind is ModelKind.QWEN3_RERANKER:
        return ModelInfo(kind)
    labels = len(config["id2label"]) if config.get("id2label") else int(config.get("num_labels", 2))
    if labels != 1:
        raise ValueError(
            f"{architecture} has {labels} labels; a reranker's classifier has one (its score's logit), so this "
            "model is not a reranker this server can serve"
        )
    sentence_transformers = config.get("sentence_transformers") or {}
    activation = sentence_transformers.get("activation_fn") or config.get("sbert_ce_default_activation_function")
    identity = str(activation or "Sigmoid").endswith("Identity")
    max_positions = None
    if kind is ModelKind.CROSS_ENCODER and "max_position_embeddings" in config:
        max_positions = int(config["max_position_embeddings"])
        if model_type in POSITIONS_AFTER_PADDING:
            max_positions -= int(config.get("pad_token_id", 1)) + 1
    return ModelInfo(kind, identity, max_positions)


def detect_kind(architecture: str, model_type: str) -> ModelKind:
    if architecture == "Qwen3ForCausalLM":
        return ModelKind.QWEN3_RERANKER
    if architecture == "Qwen3ForSequenceClassification":
        return ModelKind.QWEN3_SEQ_CLS
    if architecture.endswith("ForSequenceClassification") and model_type in ENCODER_TYPES:
        return ModelKind.CROSS_ENCODER
    raise ValueError(
        f"cannot tell what kind of reranker this is (architecture {architecture or 'none'}, model_type "
        f"{model_type or 'none'}): this server serves Qwen3-Reranker (Qwen3ForCausalLM), its sequence-classifier "
        f"conversion (Qwen3ForSequenceClassification) and encoder cross-encoders ({', '.join(sorted(ENCODER_TYPES))} "
        "*ForSequenceClassification); pass --model-kind if it is one of those"
    )
