#!/usr/bin/env python3
"""Build a randomly initialised Qwen3 reranker-shaped model from the real Qwen3 tokenizer.

vLLM serves it exactly as it serves Qwen3-Reranker (same architecture class, same prompt,
same yes/no head), so tests and benchmarks can run without downloading weights.

    python scripts/make_test_model.py --shape tiny --out models/tiny
    python scripts/make_test_model.py --shape micro --out models/micro
    python scripts/make_test_model.py --shape 0.6b-width --layers 4 --out models/wide
    python scripts/make_test_model.py --shape tiny --dtype bfloat16 --out models/tiny-bf16
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_DIR = ROOT / "tests" / "fixtures" / "qwen3-tokenizer"

# hidden, intermediate, layers, heads, kv heads, head_dim
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
        tie_word_embeddings=True,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--layers", type=int, default=None, help="override the number of layers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16"], default="float32", help="bfloat16: saved as the real weights are"
    )
    args = parser.parse_args()
    path = build_model(args.out, args.shape, args.layers, args.seed, dtype=args.dtype)
    print(f"wrote {args.shape} model to {path}")


if __name__ == "__main__":
    main()
