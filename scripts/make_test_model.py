#!/usr/bin/env python3
"""Build a randomly initialised Qwen3 reranker-shaped model from the real Qwen3 tokenizer.

vLLM serves it exactly as it serves Qwen3-Reranker (same architecture class, same prompt,
same yes/no head), so tests and benchmarks can run without downloading weights.

    python scripts/make_test_model.py --shape tiny --out models/tiny
    python scripts/make_test_model.py --shape micro --out models/micro
    python scripts/make_test_model.py --shape 0.6b-width --layers 4 --out models/wide
    python scripts/make_test_model.py --shape tiny --dtype bfloat16 --out models/tiny-bf16
    python scripts/make_test_model.py --shape tiny --kind qwen3-seq-cls --out models/tiny-seq-cls
    python scripts/make_test_model.py --kind cross-encoder --out models/bert-ce
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_DIR = ROOT / "tests" / "fixtures" / "qwen3-tokenizer"

# hidden, intermediate, layers, heads, kv heads, head_dim
UNTIED = {"8b-width"}  # shapes whose LM head is its own matrix, as Qwen3-Reranker-8B's
SHAPES: dict[str, dict[str, int]] = {
    # Overhead-bound even on a 2-core CPU (docs/s rises ~40% with the engine's step size, so the
    # forward pass is not what limits it): the benchmark's proxy for a small model on a fast GPU.
    "micro": dict(
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        head_dim=64,
    ),
    # The tests' model: small and fast, yet every part of a Qwen3 layer stack (two layers, GQA).
    # On a 2-core CPU its forward pass already dominates, so it is no proxy for serving overhead.
    "tiny": dict(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
    ),
    # Qwen3-Reranker-4B's and -8B's widths (the 8B's LM head is not tied to its embeddings): their
    # shapes at 1-2 layers, for parity (tests/test_model_kinds.py).
    "4b-width": dict(
        hidden_size=2560,
        intermediate_size=9728,
        num_hidden_layers=1,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
    ),
    "8b-width": dict(
        hidden_size=4096,
        intermediate_size=12288,
        num_hidden_layers=1,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
    ),
    # Qwen3-Reranker-0.6B's width with few layers: compute-bound on a CPU.
    "0.6b-width": dict(
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=2,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
    ),
}


def build_model(
    out_dir: Path,
    shape: str = "tiny",
    layers: int | None = None,
    seed: int = 0,
    initializer_range: float = 0.08,
    dtype: str = "float32",
) -> Path:
    """Write a random Qwen3ForCausalLM plus the Qwen3 tokenizer into out_dir and return it."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    dims = dict(SHAPES[shape])
    if layers is not None:
        dims["num_hidden_layers"] = layers
    config = Qwen3Config(
        vocab_size=151669,
        max_position_embeddings=40960,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=shape not in UNTIED,
        initializer_range=initializer_range,
        torch_dtype=dtype,
        bos_token_id=151643,
        eos_token_id=151645,
        **dims,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config).eval().to(getattr(torch, dtype))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(TOKENIZER_DIR / name, out_dir / name)
    return out_dir


def convert_to_seq_cls(model_dir: Path, out_dir: Path) -> Path:
    """A converted Qwen3-Reranker, as tomaarsen/Qwen3-Reranker-0.6B-seq-cls is made: a
    Qwen3ForSequenceClassification with one label whose row is the LM head's `yes` row minus its
    `no` row (so sigmoid of its logit is the card's score)."""
    import torch
    from transformers import AutoTokenizer, Qwen3ForCausalLM, Qwen3ForSequenceClassification

    causal = Qwen3ForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    config = causal.config
    config.architectures = ["Qwen3ForSequenceClassification"]
    config.num_labels = 1
    config.pad_token_id = tokenizer.pad_token_id
    classifier = Qwen3ForSequenceClassification(config).eval()
    classifier.model.load_state_dict(causal.model.state_dict())
    with torch.no_grad():
        head = causal.lm_head.weight
        classifier.score.weight.copy_((head[yes] - head[no]).unsqueeze(0))
    out_dir = Path(out_dir)
    classifier.save_pretrained(out_dir, safe_serialization=True)
    if out_dir.resolve() != Path(model_dir).resolve():
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(Path(model_dir) / name, out_dir / name)
    return out_dir


# What the cross-encoder's WordPiece vocabulary is trained on (any text would do; this covers the
# tests' documents well enough that few words become [UNK]).
CORPUS = """
What is the capital of China? The capital of China is Beijing. Beijing is the capital of the People's Republic.
Gravity pulls objects toward each other. Gravity is a force by which a planet draws objects toward its center.
Paris is the capital of France. Berlin is the capital of Germany. Tokyo is the capital and largest city of Japan.
The quick brown fox jumps over the lazy dog. Photosynthesis converts light energy into chemical energy in plants.
A reranker scores each document against the query, and search engines sort results by that relevance score.
Machine learning models learn patterns from data; neural networks are trained with gradient descent.
The river flows through the valley to the sea. Mountains rise above the clouds. Rain falls in the spring.
Large language models answer questions, summarize passages and retrieve relevant documents for a query.
北京是中华人民共和国的首都。长城是中国古代的军事防御工程。东京是日本的首都。
La capitale de la France est Paris. Die Hauptstadt von Deutschland ist Berlin. La capital de España es Madrid.
""".split("\n")


def build_cross_encoder(
    out_dir: Path, seed: int = 0, initializer_range: float = 0.08, token_types: bool = True
) -> Path:
    """A random BertForSequenceClassification with one label, as the MS MARCO MiniLM cross-encoders
    are, and a BERT WordPiece tokenizer trained here on CORPUS (offline; deterministic).
    token_types False: the tokenizer returns none (its model_input_names lack token_type_ids, as a
    tokenizer saved from a bare `tokenizers` backend may), so transformers passes type 0 throughout."""
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator([line for line in CORPUS if line] * 4, vocab_size=600, min_frequency=1)
    wordpiece.save_model(str(out_dir))
    names = {} if token_types else {"model_input_names": ["input_ids", "attention_mask"]}
    tokenizer = BertTokenizerFast(vocab_file=str(out_dir / "vocab.txt"), model_max_length=512, **names)
    tokenizer.save_pretrained(out_dir)
    config = BertConfig(
        vocab_size=wordpiece.get_vocab_size(),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=512,
        type_vocab_size=2,
        num_labels=1,
        initializer_range=initializer_range,
        architectures=["BertForSequenceClassification"],
    )
    torch.manual_seed(seed)
    BertForSequenceClassification(config).eval().save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--layers", type=int, default=None, help="override the number of layers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16"], default="float32", help="bfloat16: saved as the real weights are"
    )
    parser.add_argument(
        "--kind",
        choices=["qwen3-reranker", "qwen3-seq-cls", "cross-encoder"],
        default="qwen3-reranker",
        help="qwen3-seq-cls: converted to a sequence classifier; cross-encoder: a small BERT (--shape ignored)",
    )
    args = parser.parse_args()
    if args.kind == "cross-encoder":
        path = build_cross_encoder(args.out, args.seed)
    else:
        path = build_model(args.out, args.shape, args.layers, args.seed, dtype=args.dtype)
        if args.kind == "qwen3-seq-cls":
            path = convert_to_seq_cls(path, path)
    print(f"wrote a {args.kind} model ({args.shape}) to {path}")


if __name__ == "__main__":
    main()
