"""Logging: the server's and vLLM's logs go to stdout and to the log file (`vllm.log`), as text
lines (the default) or, with --log-format json, one JSON object per line (`JsonFormatter`: time,
level, logger, process, pid, message, and the request id and trace id where a line has them). Either way the
message is the same text, so `Engine started.` is in vllm.log in both.

vLLM's engine core runs in a spawned process, so handlers in this process never see its records.
vLLM applies the dictConfig named by VLLM_LOGGING_CONFIG_PATH in every process it starts (at
`import vllm`); we write one that sends the `vllm` logger to stdout and appends to our file.
That dictConfig closes handlers made before it, so ours are attached after vLLM is imported.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

LogFormat = Literal["text", "json"]

# [main], or with --api-processes [supervisor] and [api-0], [api-1], ...; vLLM's engine
# processes show their multiprocessing names.
FORMAT = "%(asctime)s %(levelname)s [%(processName)s] %(name)s: %(message)s"
VLLM_FORMAT = "%(asctime)s %(levelname)s [%(processName)s] vllm[%(process)d] %(filename)s:%(lineno)d: %(message)s"
OUR_LOGGERS = ("server", "uvicorn", "uvicorn.error", "opentelemetry")  # opentelemetry: export failures


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log pipelines that should not parse text."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key in ("request_id", "trace_id"):  # the access, hang-up and error lines' (trace id: tracing on)
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def engine_started(models: list[str], api_processes: int = 1) -> str:
    """The one `Engine started.` line, logged once every model in every API process has scored its
    warm-up (by the process, or with --api-processes by the supervisor): what a user tails vllm.log for."""
    which = f"model={models[0]}" if len(models) == 1 else f"models={', '.join(models)}"
    processes = f"; {api_processes} API processes" if api_processes > 1 else ""
    return f"Engine started. {which}{processes}; ready on /v1/rerank"


def formatter_config(log_format: LogFormat, text_format: str) -> dict:
    return {"()": f"{__name__}.JsonFormatter"} if log_format == "json" else {"format": text_format}


def vllm_logging_config(log_file: Path | None, level: str, log_format: LogFormat = "text") -> dict:
    handlers: dict[str, dict] = {
        "stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "vllm"}
    }
    if log_file is not None:
        handlers["file"] = {"class": "logging.FileHandler", "filename": str(log_file), "formatter": "vllm"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"vllm": formatter_config(log_format, VLLM_FORMAT)},
        "handlers": handlers,
        "loggers": {"vllm": {"handlers": list(handlers), "level": level.upper(), "propagate": False}},
    }


def remove_file(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def setup_logging(log_file: Path | None, level: str = "info", log_format: LogFormat = "text") -> None:
    if log_file is not None:
        log_file = log_file.resolve()
        log_file.parent.mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix="rerank-vllm-logging-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(vllm_logging_config(log_file, level, log_format), f)
    # vLLM's engine processes, started later by this one, read it as they start: removed when this one ends
    atexit.register(remove_file, path)
    os.environ["VLLM_CONFIGURE_LOGGING"] = "1"
    os.environ["VLLM_LOGGING_CONFIG_PATH"] = path
    import vllm.logger  # noqa: F401  (applies the config above in this process)

    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(FORMAT)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if log_file is not None:
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler.setFormatter(formatter)
    for name in OUR_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = list(handlers)
        logger.setLevel(level.upper())
        logger.propagate = False
    logging.getLogger("uvicorn.access").disabled = True  # our access log (server.access) replaces it
    logging.captureWarnings(True)
