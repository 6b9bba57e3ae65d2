"""Every kind of reranker, told from its own config alone, scores as the code its users trust does
(real vLLM engine, fp32, |diff| <= 1e-4): a converted Qwen3-Reranker sequence classifier
(transformers), a BERT cross-encoder (sentence-transformers' CrossEncoder, written out), and the
original Qwen3-Reranker at the 4B's and 8B's widths (the card; the 8B's LM head is untied)."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from server.core.rerank_job import Ranking
from server.core.served_model import ModelKind
from server.core.settings import Settings
from server.engine.model_kind import info_from_config
from server.rerank.cross_encoder import CrossEncoderPromptBuilder

from .conftest import MAX_MODEL_LEN, EngineLoop, LiveServer, engine_settings, start_engine, stopped_at_exit
from .helpers import DOCS, QUERY, assert_close, server_scores

LONG_DOCS = ["Beijing " * 2000, "short document", "the river flows through the valley to the sea " * 300]
# Words of the cross-encoder's training corpus, each one whole token: a window boundary never splits
# a word, so a window's text tokenizes to exactly the window's tokens.
WHOLE_WORDS = "gravity pulls objects toward each other and the capital of china is beijing "
MODELS: dict[str, dict[str, Any]] = {
    "qwen3-seq-cls": dict(kind=ModelKind.QWEN3_SEQ_CLS, shape="tiny"),
    "cross-encoder": dict(kind=ModelKind.CROSS_ENCODER),
    # a tokenizer that returns no token types: transformers (and CrossEncoder) pass type 0 throughout
    "cross-encoder-no-token-types": dict(kind=ModelKind.CROSS_ENCODER, token_types=False, initializer_range=0.3),
    "qwen3-4b-width": dict(kind=ModelKind.QWEN3_RERANKER, shape="4b-width", initializer_range=0.02),
    "qwen3-8b-width": dict(kind=ModelKind.QWEN3_RERANKER, shape="8b-width", initializer_range=0.02),
}


@dataclass
class Served:
    name: str
    model_dir: Path
    live: LiveServer
    reference: dict[tuple[str, ...], list[float]]  # reference scores, computed before the engine started
    reference_tokenizer: Any


def build(name: str, root: Path) -> Path:
    from make_test_model import build_cross_encoder, build_model, convert_to_seq_cls

    spec = MODELS[name]
    if spec["kind"] is ModelKind.CROSS_ENCODER:
        ranges = {"initializer_range": spec["initializer_range"]} if "initializer_range" in spec else {}
        return build_cross_encoder(root / name, token_types=spec.get("token_types", True), **ranges)
    path = build_model(root / name, shape=spec["shape"], initializer_range=spec.get("initializer_range", 0.08))
    return convert_to_seq_cls(path, path) if spec["kind"] is ModelKind.QWEN3_SEQ_CLS else path


def reference_for(name: str, model_dir: Path) -> Any:
    from tests.reference import CardReranker, CrossEncoderReference, SeqClsReranker

    kind = MODELS[name]["kind"]
    if kind is ModelKind.CROSS_ENCODER:
        return CrossEncoderReference(str(model_dir), max_length=MAX_MODEL_LEN)
    if kind is ModelKind.QWEN3_SEQ_CLS:
        return SeqClsReranker(str(model_dir), max_length=MAX_MODEL_LEN)
    return CardReranker(str(model_dir), max_length=MAX_MODEL_LEN)


def documents_for(name: str) -> list[list[str]]:
    sets = [DOCS, LONG_DOCS]
    if MODELS[name]["kind"] is ModelKind.CROSS_ENCODER:
        sets.append([WHOLE_WORDS * 120])
    return sets


@pytest.fixture(scope="module", params=list(MODELS))
def served(
    request: pytest.FixtureRequest,
    engine_loop: EngineLoop,
    serve_app: Callable[..., LiveServer],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """One kind's model served on its own engine (closed before the next kind's starts), with its
    reference scores computed first and the reference model freed (the 8B width is 5.7 GB in fp32)."""
    name = request.param
    model_dir = build(name, tmp_path_factory.mktemp("kinds"))
    reference = reference_for(name, model_dir)
    scores = {tuple(docs): reference.scores(QUERY, docs) for docs in documents_for(name)}
    tokenizer = reference.tokenizer
    del reference
    gc.collect()
    settings = Settings(**engine_settings(model_dir, served_model_name=name))
    engine, stack = start_engine(engine_loop, settings)
    try:
        with stopped_at_exit(serve_app) as live_server:  # this kind's server stops with its engine
            live = live_server(start=False, model=str(model_dir), served_model_name=name)
            engine_loop.run(live.service.start(engine))
            yield Served(name, model_dir, live, scores, tokenizer)
    finally:
        engine_loop.run(stack.aclose())


@pytest.mark.engine
def test_the_kind_is_told_from_the_config_alone(served):
    assert served.live.service.model.kind is MODELS[served.name]["kind"]
    with served.live.client() as client:
        assert client.get("/ready").status_code == 200


@pytest.mark.engine
def test_scores_equal_the_reference(served):
    with served.live.client() as client:
        want = served.reference[tuple(DOCS)]
        assert_close(server_scores(client, QUERY, DOCS), want, 1e-4)
    assert max(want) - min(want) > 0.01, "the random model must tell documents apart for this test to mean anything"


@pytest.mark.engine
def test_over_length_documents_are_cut_as_the_reference_cuts_them(served):
    with served.live.client() as client:
        response = client.post("/v1/rerank", json={"query": QUERY, "documents": LONG_DOCS})
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["prompt_tokens"] <= 2 * MAX_MODEL_LEN + 200
        assert_close(server_scores(client, QUERY, LONG_DOCS), served.reference[tuple(LONG_DOCS)], 1e-4)


@pytest.mark.engine
@pytest.mark.parametrize("served", ["cross-encoder"], indirect=True)  # the Qwen3 kinds: test_long_documents.py
def test_a_cross_encoder_scores_a_chunked_document_by_its_best_window(served):
    from tests.reference import CrossEncoderReference

    doc = WHOLE_WORDS * 120
    assert not any(t.startswith("##") for t in served.reference_tokenizer.tokenize(doc)), "whole words only"
    with served.live.client() as client:
        response = client.post(
            "/v1/rerank", json={"query": QUERY, "documents": [doc], "long_document_strategy": "chunk"}
        )
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    passage = result["passage"]
    assert passage["chunks"] > 1
    reference = CrossEncoderReference(str(served.model_dir), max_length=MAX_MODEL_LEN)
    [want] = reference.scores(QUERY, [doc[passage["start"] : passage["end"]]])
    assert abs(result["relevance_score"] - want) <= 1e-4
    # The whole document through the reference is cut at 512 tokens: the first window's score.
    assert served.reference[(doc,)][0] <= result["relevance_score"] + 1e-4


@pytest.mark.engine
@pytest.mark.parametrize("served", ["cross-encoder"], indirect=True)  # the Qwen3 kinds take one
def test_a_cross_encoder_refuses_an_instruction(served):
    with served.live.client() as client:
        response = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "instruction": "Find it"})
        assert response.status_code == 400
        assert "instruction" in response.json()["error"]["message"]
        assert client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}).status_code == 200


# --- without an engine ---------------------------------------------------------------------------


def test_cross_encoder_prompts_are_the_tokenizers_pair_encoding(tmp_path):
    """Each prompt is `tokenizer(query, document, truncation="only_second")`'s ids, with token type 1
    from where the tokenizer puts it, also for a document cut to the budget."""
    from make_test_model import build_cross_encoder
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(build_cross_encoder(tmp_path / "ce"))
    builder = CrossEncoderPromptBuilder(tokenizer, 64)
    docs = ["The capital of China is Beijing.", "gravity " * 200, "北京是中国的首都"]
    prompts = builder.build(QUERY, docs)
    for doc, ids, cut in zip(docs, prompts.token_ids, prompts.truncated, strict=True):
        want = tokenizer(QUERY, doc, truncation="only_second", max_length=64)
        assert ids == want["input_ids"]
        assert prompts.second_segment == want["token_type_ids"].index(1)
        assert cut == (len(tokenizer(QUERY, doc)["input_ids"]) > 64)
    assert prompts.truncated == [False, True, False]


def test_the_kind_comes_from_the_config():
    def config(architecture: str, model_type: str, **extra: Any) -> dict[str, Any]:
        return {"architectures": [architecture], "model_type": model_type, **extra}

    one_label = {"id2label": {"0": "LABEL_0"}}
    assert info_from_config(config("Qwen3ForCausalLM", "qwen3")).kind is ModelKind.QWEN3_RERANKER
    assert info_from_config(config("Qwen3ForSequenceClassification", "qwen3", **one_label)).kind is (
        ModelKind.QWEN3_SEQ_CLS
    )
    bge = info_from_config(
        config("XLMRobertaForSequenceClassification", "xlm-roberta", max_position_embeddings=8194, **one_label)
    )
    assert (bge.kind, bge.max_positions, bge.max_model_len(8192)) == (ModelKind.CROSS_ENCODER, 8192, 8192)
    minilm = info_from_config(
        config(
            "BertForSequenceClassification",
            "bert",
            max_position_embeddings=512,
            sbert_ce_default_activation_function="torch.nn.modules.linear.Identity",
            **one_label,
        )
    )
    assert (minilm.kind, minilm.max_model_len(8192), minilm.identity_activation) == (
        ModelKind.CROSS_ENCODER,
        512,
        True,
    )
    modernbert = config("ModernBertForSequenceClassification", "modernbert", max_position_embeddings=8192, **one_label)
    modernbert["sentence_transformers"] = {"activation_fn": "torch.nn.modules.activation.Sigmoid"}
    assert not info_from_config(modernbert).identity_activation
    with pytest.raises(ValueError, match="3 labels"):
        info_from_config(config("BertForSequenceClassification", "bert", num_labels=3))
    with pytest.raises(ValueError, match="--model-kind"):
        info_from_config(config("LlamaForCausalLM", "llama"))
    # --model-kind names the kind of a model the rules do not know
    assert info_from_config(config("LlamaForSequenceClassification", "llama", **one_label), ModelKind.CROSS_ENCODER)


def test_an_identity_activation_scores_the_logit_itself():
    assert Ranking([0, 1], [2.5, -1.0], [None, None], identity_activation=True).scores == [2.5, -1.0]
    assert Ranking([0, 1], [0.0, 0.0], [None, None]).scores == [0.5, 0.5]


def test_a_model_of_unknown_kind_is_refused_before_anything_loads(tmp_path, capsys):
    from server.cli import CONFIG_ERROR_EXIT, main

    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(tmp_path), "--log-file", ""])
    assert exit_info.value.code == CONFIG_ERROR_EXIT
    assert "--model-kind" in capsys.readouterr().err
