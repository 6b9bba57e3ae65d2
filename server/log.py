"""Logging: the server's and vLLM's logs go to stdout and to the log file (`vllm.log`).

vLLM's engine core runs in a spawned process, so handlers in this process never see its records.
vLLM applies the dictConfig named by VLLM_LOGGING_CONFIG_PATH in every process it starts (at
`import vllm`); we write one that sends the `vllm` logger to stdout and appends to our file.
That dictConfig closes handlers made before it, so ours are attached after vLLM is imported.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

# [main], or with --api-processes [supervisor] and [api-0], [api-1], ...; vLLM's engine
# processes show their multiprocessing names.
FORMAT = "%(asctime)s %(levelname)s [%(processName)s] %(name)s: %(message)s"
VLLM_FORMAT = "%(asctime)s %(levelname)s [%(processName)s] vllm[%(process)d] %(filename)s:%(lineno)d: %(message)s"
OUR_LOGGERS = ("server", "uvicorn", "uvicorn.error")


def vllm_logging_config(log_file: Path | None, level: str) -> dict:
    handlers: dict[str, dict] = {
        "stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "vllm"}
    }
    if log_file is not None:
        handlers["file"] = {"class": "logging.FileHandler", "filename": str(log_file), "formatter": "vllm"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"vllm": {"format": VLLM_FORMAT}},
        "handlers": handlers,
        "loggers": {"vllm": {"handlers": list(handlers), "level": level.upper(), "propagate": False}},
    }


def setup_logging(log_file: Path | None, level: str = "info") -> None:
    if log_file is not None:
        log_file = log_file.resolve()
        log_file.parent.mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix="rerank-vllm-logging-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(vllm_logging_config(log_file, level), f)
    os.environ["VLLM_CONFIGURE_LOGGING"] = "1"
    os.environ["VLLM_LOGGING_CONFIG_PATH"] = path
    import vllm.logger  # noqa: F401  (applies the config above in this process)

    formatter = logging.Formatter(FORMAT)
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
