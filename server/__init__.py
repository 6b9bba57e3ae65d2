"""Qwen3-Reranker on vLLM behind a Cohere/Jina/vLLM-compatible rerank API."""

__version__ = "0.1.0"
