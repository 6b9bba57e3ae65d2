"""All configuration in one place: environment variables `RERANK_<NAME>` and CLI flags `--<name>`.

CLI flags (see `server/cli.py`) override environment variables, which override the defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from server.core import settings_rules as rules
from server.core.rerank_job import Strategy
from server.core.served_model import PER_MODEL, ModelKind, ServedModel, per_model

DEFAULT_MODEL = "Qwen/Qwen3-Reranker-0.6B"
MiB = 1024 * 1024


def _rule(check: Callable[[Any], Any], *fields: str, mode: Literal["before", "after"] = "after") -> Any:
    """A field validator that runs `check` on the value (a function of server/core/settings_rules.py)."""
    return field_validator(*fields, mode=mode)(staticmethod(check))


class Settings(BaseSettings):
    # an empty variable is an unset one (`RERANK_DTYPE=` in .env keeps the default); an error never
    # echoes the value it refused (it may be an API key)
    model_config = SettingsConfigDict(
        env_prefix="RERANK_", extra="ignore", validate_default=True, env_ignore_empty=True, hide_input_in_errors=True
    )

    # --- model and engine -----------------------------------------------------------------
    # Several models: each of these lists one value per --model, in its order (docs/models.md).
    model: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [DEFAULT_MODEL],
        description="model path or Hugging Face id; repeat the flag (or comma-separate) to serve several behind "
        "one endpoint, each on its own engine, the first the default",
    )
    served_model_name: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="the name clients send and answers carry, one per --model in its order (default: --model)",
    )
    model_kind: Annotated[list[ModelKind], NoDecode] = Field(
        default_factory=lambda: [ModelKind.AUTO],
        description="what the model is (docs/models.md): auto tells it from its config.json; qwen3-reranker "
        "(Qwen3ForCausalLM, the original), qwen3-seq-cls (its Qwen3ForSequenceClassification conversion) or "
        "cross-encoder (an encoder's *ForSequenceClassification: BERT, XLM-RoBERTa, ModernBERT); one for all "
        "models or one per --model",
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="auto: the model's dtype on a GPU; on the CPU bfloat16 if supported, else float32"
    )
    max_model_len: int = Field(8192, ge=64, description="longest prompt in tokens (the card uses 8192)")
    gpu_memory_utilization: Annotated[list[float], NoDecode] = Field(
        default_factory=list,
        description="fraction of GPU memory for vLLM (default 0.9; on the CPU see --kv-cache-gib); several "
        "models on one GPU need one each, in --model's order, together at most 1",
    )
    kv_cache_gib: Annotated[list[float], NoDecode] = Field(
        default_factory=list,
        description="CPU only: KV cache size in GiB (default: a safe share of free memory, split between "
        "models); one for all models or one per --model",
    )
    enable_prefix_caching: bool = Field(True, description="reuse the shared prompt prefix across documents")
    block_size: int | None = Field(
        None, ge=1, description="KV cache block size (default: vLLM's on a GPU, 32 on the CPU)"
    )
    max_num_seqs: int | None = Field(None, ge=1, description="engine batch size in sequences (default: vLLM's)")
    max_num_batched_tokens: int | None = Field(
        None, ge=1, description="engine step size in tokens (default: 8192 or --max-model-len if larger)"
    )
    enforce_eager: bool = Field(False, description="skip torch.compile and CUDA graphs (faster start-up)")
    cpu_threads_bind: str | None = Field(
        None,
        pattern=r"^(auto|nobind|[0-9,\-|]+)$",
        description="CPU only: cores the engine worker's threads are bound to (vLLM's VLLM_CPU_OMP_THREADS_BIND): "
        "auto (vLLM's: the cores of a NUMA node but one kept for its scheduler, the same ones for every server on "
        "the host; default, except that on a machine of up to 4 cores the worker gets them all, its threads "
        "sleeping when idle: OMP_WAIT_POLICY=PASSIVE), "
        "nobind, or a core list such as 0-7; servers that share a host's cores: nobind (docs/operations.md)",
    )
    data_parallel_size: int = Field(
        1,
        ge=1,
        description="GPUs to use in this process, one engine per GPU (vLLM's data parallelism: it balances the "
        "pairs across them); needs that many GPUs",
    )

    api_processes: int | None = Field(
        None,
        ge=1,
        le=64,
        description="HTTP processes serving the API on one shared port, all feeding one engine (vLLM's "
        "multi-API-server machinery); default 1 on the CPU, 2 on a GPU, where one process's CPU would be the limit",
    )

    # --- long documents -------------------------------------------------------------------
    long_document_strategy: Strategy = Field(
        "truncate",
        description="default for requests that name none: truncate (the model card: a long document loses its "
        "tail) or chunk (score overlapping windows, keep the best)",
    )
    chunk_overlap_tokens: int | None = Field(
        None, ge=0, description="chunk strategy: tokens shared by neighbouring windows (default 1/8 of the window)"
    )

    # --- score cache ----------------------------------------------------------------------
    score_cache_size: int = Field(
        200_000,
        ge=0,
        description="pairs whose scores this process keeps (least recently used evicted; 42.5 MiB measured at the "
        "default); a repeated (instruction, query, document) costs no engine time; 0 turns the cache off",
    )
    score_cache_url: SecretStr | None = Field(
        None,
        description="redis://[:password@]host:port/db (or rediss://): a Redis or Valkey that every API process "
        "and replica shares, behind the in-process cache (default: none)",
    )
    score_cache_ttl: int = Field(86400, ge=1, description="seconds a score lives in the shared Redis cache")

    # --- HTTP -----------------------------------------------------------------------------
    host: str = Field("0.0.0.0", description="address to bind")
    port: int = Field(8000, ge=0, le=65535, description="port to bind")
    api_key: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="API key(s) required on every route but /health and /ready (comma-separated or repeated)",
    )
    api_key_priority: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="API keys with a default priority, KEY=PRIORITY (comma-separated or repeated), accepted "
        "besides --api-key: e.g. a bulk pipeline's key at 10 marks its traffic as bulk without changing its code; "
        "a request's own priority may only defer it further",
    )
    health_route: str | None = Field(
        None,
        pattern=r"^/",
        description="one more path answering as /ready (Vertex AI: AIP_HEALTH_ROUTE, read when this is unset)",
    )
    predict_route: str | None = Field(
        None,
        pattern=r"^/",
        description='one more path taking {"instances": [rerank or score bodies], "parameters": {...}} and answering '
        '{"predictions": [...]} (Vertex AI: AIP_PREDICT_ROUTE, read when this is unset)',
    )
    metrics_public: bool = Field(False, description="serve /metrics without an API key")
    vllm_metrics: bool = Field(
        False,
        description="also vLLM's own vllm:* engine metrics on /metrics (queue, KV cache use, per-request "
        "timings); off: only rerank_*, and a fifth less CPU per document in the API process",
    )

    # --- limits ---------------------------------------------------------------------------
    max_documents: int = Field(1000, ge=1, description="most documents in one request (413 past it)")
    max_body_bytes: int = Field(16 * MiB, ge=1024, description="largest request body in bytes (413 past it)")
    max_pairs_in_flight: int = Field(
        8192,
        ge=1,
        description="most pairs in the engine at once, all API processes together (a pair: the query with one "
        "document, or one window of a chunked one); 429 past it",
    )
    max_chunks_per_doc: int = Field(
        64,
        ge=1,
        description="chunk strategy: most windows scored per document, the first ones (a request may ask for fewer)",
    )
    interactive_reserve_pairs: int | None = Field(
        None,
        ge=0,
        description="of --max-pairs-in-flight, pairs that bulk requests (priority above 0) never take, so that "
        "interactive ones are admitted while bulk floods the server (default: a quarter of the budget, at most "
        "what leaves room for a full request of --max-documents)",
    )
    priority_delay_ms: float = Field(
        250.0,
        ge=0,
        description="each priority point defers a request's pairs this long in the engine's queue, which "
        "serves the earliest arrival plus deferral first: interactive pairs overtake bulk pairs (priority 10: "
        "2.5 s) that arrived less than that before them, and older bulk pairs go first (bulk ages, never "
        "starves); a chunked document's window k is deferred k times as much",
    )
    request_timeout: float = Field(120.0, gt=0, description="seconds before a request gets 504 and is aborted")
    drain_timeout: int = Field(30, ge=0, description="seconds to finish in-flight requests on SIGTERM")
    drain_delay: float = Field(
        5.0,
        ge=0,
        description="on SIGTERM, seconds /ready answers 503 while the server still takes requests "
        "(so load balancers take it out first); then it stops accepting and drains",
    )
    startup_timeout: float = Field(
        1800.0,
        gt=0,
        description="seconds for the engine to load (model download included) and score its warm-up; "
        "past them the server logs why and exits 1",
    )

    # --- logging --------------------------------------------------------------------------
    log_file: Path | None = Field(Path("vllm.log"), description="also write all logs here ('' for none)")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    log_format: Literal["text", "json"] = Field(
        "text", description="text lines, or one JSON object per line (time, level, logger, process, request_id)"
    )

    # --- tracing --------------------------------------------------------------------------
    otlp_traces_endpoint: str | None = Field(
        None,
        description="OpenTelemetry collector to send a trace of every request to, e.g. http://otel-collector:4318 "
        "(http/protobuf; /v1/traces is added to a bare address) or http://otel-collector:4317 (grpc); "
        "default: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT, else none (tracing off)",
    )
    otlp_traces_protocol: Literal["http/protobuf", "grpc"] | None = Field(
        None,
        description="OTLP transport (default: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL, "
        "else http/protobuf)",
    )

    # each value's own checks (server/core/py); what spans several settings: _check
    _split_values = _rule(rules.split_values, "api_key", "api_key_priority", *PER_MODEL, mode="before")
    _fractions = _rule(rules.fractions, "gpu_memory_utilization")
    _sizes = _rule(rules.sizes, "kv_cache_gib")
    _key_priorities = _rule(rules.key_priorities, "api_key_priority")
    _no_url_is_none = _rule(rules.no_url_is_none, "score_cache_url", "otlp_traces_endpoint", mode="before")
    _redis_url = _rule(rules.redis_url, "score_cache_url")
    _endpoint_url = _rule(rules.endpoint_url, "otlp_traces_endpoint")
    _empty_is_none = _rule(rules.empty_is_none, "log_file", mode="before")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        n = len(self.model)
        if n == 0:
            raise ValueError("--model: at least one model")
        if not self.served_model_name:
            self.served_model_name = list(self.model)
        for name, values, one_for_all in (
            ("served_model_name", self.served_model_name, False),
            ("model_kind", self.model_kind, True),
            ("gpu_memory_utilization", self.gpu_memory_utilization, n == 1),
            ("kv_cache_gib", self.kv_cache_gib, True),
        ):
            if values and len(values) != n and not (one_for_all and len(values) == 1):
                each = "one per --model" if not one_for_all else "one for all models or one per --model"
                raise ValueError(f"{name}: {len(values)} values for {n} models; give {each}")
        if len(set(self.served_model_name)) < n:
            raise ValueError(f"served_model_name: each model needs its own name, got {self.served_model_name}")
        if self.max_pairs_in_flight < self.max_documents:
            raise ValueError(
                f"max_pairs_in_flight ({self.max_pairs_in_flight}) must be >= max_documents "
                f"({self.max_documents}), or a full request could never be admitted"
            )
        if self.interactive_reserve_pairs is None:
            room = self.max_pairs_in_flight - self.max_documents
            self.interactive_reserve_pairs = min(self.max_pairs_in_flight // 4, room)
        elif self.interactive_reserve_pairs > self.max_pairs_in_flight:
            raise ValueError(
                f"interactive_reserve_pairs ({self.interactive_reserve_pairs}) must be at most max_pairs_in_flight "
                f"({self.max_pairs_in_flight})"
            )
        return self

    def served_models(self) -> list[ServedModel]:
        """Every model the server serves, the default first."""
        return per_model(
            self.model, self.served_model_name, self.model_kind, self.gpu_memory_utilization, self.kv_cache_gib
        )

    def api_keys(self) -> list[str]:
        """Every accepted key: --api-key's and --api-key-priority's."""
        return [k.get_secret_value() for k in self.api_key] + list(self.key_priorities())

    def key_priorities(self) -> dict[str, int]:
        """--api-key-priority: each key's default priority."""
        pairs = (item.get_secret_value().rpartition("=") for item in self.api_key_priority)
        return {key: int(priority) for key, _, priority in pairs}

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Settings from `RERANK_*` variables; `RERANK_API_KEYS` is read as well as `RERANK_API_KEY`."""
        import os

        # Vertex AI tells a custom container its port and routes in its own variables
        for name, variable in (
            ("port", "AIP_HTTP_PORT"),
            ("health_route", "AIP_HEALTH_ROUTE"),
            ("predict_route", "AIP_PREDICT_ROUTE"),
        ):
            if name not in overrides and f"RERANK_{name.upper()}" not in os.environ and os.environ.get(variable):
                overrides[name] = os.environ[variable]
        if "api_key" not in overrides:
            keys = ",".join(filter(None, (os.environ.get("RERANK_API_KEY"), os.environ.get("RERANK_API_KEYS"))))
            if keys:
                overrides["api_key"] = keys
        return cls(**overrides)
