"""Qwen3-Reranker on vLLM behind a Cohere/Jina/vLLM-compatible rerank API."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qwen3-rerank-server")  # pyproject.toml's, as installed (setup.sh, the images)
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"
