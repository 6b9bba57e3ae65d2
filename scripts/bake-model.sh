#!/usr/bin/env bash
# Docker build step: download a model into the image's Hugging Face cache ($HF_HOME), so that the
# container needs no internet at run time. No argument: nothing to bake.
set -euo pipefail
model="${1:-}"
[ -n "$model" ] || exit 0
python3 -c "import sys; from huggingface_hub import snapshot_download; print(snapshot_download(sys.argv[1]))" "$model"
