#!/usr/bin/env bash
# Set up .venv if needed, then serve: scripts/serve.sh [--model Qwen/Qwen3-Reranker-0.6B] [flags...]
# Flags and RERANK_* variables: `scripts/serve.sh --help`. Logs go to stdout and ./vllm.log.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m server "$@"
