#!/usr/bin/env bash
# Set up .venv if needed, then serve: scripts/serve.sh [--model Qwen/Qwen3-Reranker-0.6B] [flags...]
# Flags and RERANK_* variables: `scripts/serve.sh --help`. Logs go to stdout and ./vllm.log.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# tcmalloc, as the image runs the server (and vLLM's CPU guide asks): with glibc's malloc the model
# worker's memory grew under mixed traffic (docs/performance.md, "Soak"). LD_PRELOAD set: kept.
if [[ -z "${LD_PRELOAD:-}" ]]; then
  tcmalloc="$(/sbin/ldconfig -p 2>/dev/null | awk '/libtcmalloc_minimal\.so\.4 /{print $NF; exit}')"
  if [[ -n "$tcmalloc" ]]; then
    export LD_PRELOAD="$tcmalloc"
  else
    echo "note: no tcmalloc found; for steady memory install it (Debian/Ubuntu: apt install libtcmalloc-minimal4)" >&2
  fi
fi
exec .venv/bin/python -m server "$@"
