"""`python -m server` / `rerank-server`: flags -> Settings -> one serving process or a supervisor.

Every Settings field is a flag `--field-name` and an environment variable `RERANK_FIELD_NAME`;
flags win. Before anything slow starts, the log file is opened, a local model's files are checked
and the HTTP port bound: a log file the server may not write, a local model it may not read, or a
port already taken, is one line on stderr and exit 2 within a second, before any model is loaded.
Then one process serves (server/processes/process.py), or with --api-processes N a supervisor runs N API
processes on one engine (server/processes/supervisor.py).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import socket
import sys
import types
from pathlib import Path
from typing import Any, NoReturn, get_args, get_origin

from pydantic import ValidationError

from server.core.settings import Settings

CONFIG_ERROR_EXIT = 2  # bad flags, a log file that cannot be written, a port that is taken


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="Serve Qwen3-Reranker with vLLM behind POST /v1/rerank. "
        "Every flag is also an environment variable RERANK_<FLAG_NAME>.",
    )
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        annotation = field.annotation
        help_text = f"{field.description or ''} [env RERANK_{name.upper()}]"
        if annotation is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif get_origin(annotation) is list:
            parser.add_argument(flag, action="append", default=None, help=help_text)
        else:
            choices = None
            literal = [a for a in get_args(annotation) if not isinstance(a, type | types.NoneType)]
            if get_origin(annotation) is not types.UnionType and literal:
                choices = literal
            parser.add_argument(flag, default=None, choices=choices, help=help_text)
    return parser


SAGEMAKER_MODEL_DIR = Path("/opt/ml/model")  # where SageMaker puts a model's artifacts
SAGEMAKER_PORT = 8080


def settings_from_args(argv: list[str] | None = None) -> Settings:
    argv = sys.argv[1:] if argv is None else argv
    serve = bool(argv) and argv[0] == "serve"
    args = build_parser().parse_args(argv[1:] if serve else argv)
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None}
    if serve:
        overrides = sagemaker_defaults(overrides)
    return Settings.from_env(**overrides)


def sagemaker_defaults(overrides: dict[str, Any]) -> dict[str, Any]:
    """`IMAGE serve`, as SageMaker runs a container: port 8080 (or SAGEMAKER_BIND_TO_PORT), the model
    from /opt/ml/model when SageMaker put one there (over RERANK_MODEL, which the image sets to its
    default or baked model; a --model flag still wins), and a drain that ends well within the 30 s
    between its SIGTERM and SIGKILL; flags and the other RERANK_* variables still win."""

    def unset(name: str) -> bool:
        return name not in overrides and f"RERANK_{name.upper()}" not in os.environ

    if unset("port"):
        overrides["port"] = os.environ.get("SAGEMAKER_BIND_TO_PORT") or SAGEMAKER_PORT
    if "model" not in overrides and SAGEMAKER_MODEL_DIR.is_dir() and any(SAGEMAKER_MODEL_DIR.iterdir()):
        overrides["model"] = str(SAGEMAKER_MODEL_DIR)
    if unset("drain_delay"):
        overrides["drain_delay"] = 2
    if unset("drain_timeout"):
        overrides["drain_timeout"] = 20
    return overrides


def refuse(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(CONFIG_ERROR_EXIT)


def check_log_file(log_file: Path | None) -> None:
    """The log file opens for appending (its directory made if missing), or one line says why not."""
    if log_file is None:
        return
    path = log_file.resolve()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a"):
            pass
    except OSError as exc:
        refuse(
            f"cannot write the log file {path} as uid {os.getuid()} ({exc.strerror}): make {path.parent} "
            f"writable for uid {os.getuid()} (e.g. `sudo chown {os.getuid()} {path.parent}`), or choose another "
            "--log-file ('' for none)"
        )


def check_model(model: str) -> None:
    """A local model directory (or file) is readable by this uid, or one line says what is not."""
    from server.engine.model_files import unreadable_model_path

    problem = unreadable_model_path(model)
    if problem is not None:
        uid = os.getuid()
        refuse(
            f"cannot read the model at {model} as uid {uid} ({problem}): make it readable for uid {uid} "
            f"(e.g. `chmod -R a+rX {model}` on the host for a mounted directory), or pass another --model"
        )


def check_models(settings: Settings) -> None:
    """Each model is readable and its config says it is a reranker this server serves (or
    --model-kind does); several models have what they need (server/engine/engine_args.py)."""
    from server.engine.engine_args import check_several_models
    from server.engine.model_kind import model_info

    for served in settings.served_models():
        check_model(served.model)
        try:
            model_info(served)
        except Exception as exc:  # an unknown kind, or a config.json that cannot be read
            refuse(f"model {served.model}: {exc}")
    try:
        check_several_models(settings)
    except ValueError as exc:
        refuse(str(exc))


def listen(settings: Settings) -> socket.socket:
    from server.processes.process import bind_socket

    try:
        return bind_socket(settings)
    except OSError as exc:
        refuse(
            f"cannot listen on {settings.host}:{settings.port} ({exc.strerror}): another process holds the port; "
            "stop it or choose another --port (RERANK_PORT)"
        )


def main(argv: list[str] | None = None) -> None:
    try:
        settings = settings_from_args(argv)
    except ValidationError as exc:
        print(f"invalid settings:\n{exc}", file=sys.stderr)
        raise SystemExit(CONFIG_ERROR_EXIT) from None
    check_log_file(settings.log_file)
    check_models(settings)
    sock = listen(settings)
    from server.core.log import setup_logging
    from server.engine.engine_args import Deployment

    multiprocessing.current_process().name = "main"  # in every log line; see server/core/log.py
    setup_logging(settings.log_file, settings.log_level, settings.log_format)
    logging.getLogger("server").info("settings: %r", settings)  # SecretStr keeps API keys out of the log
    deployment = Deployment.resolve(settings)
    logging.getLogger("server").info("deployment: %s", deployment)
    if deployment.api_processes > 1:
        from server.processes.supervisor import run_supervisor

        raise SystemExit(run_supervisor(settings, deployment.api_processes, sock))
    from server.processes.process import run_on_uvloop, serve

    # uvicorn re-raises the signal that stopped it once it has drained; handled here, a SIGTERM
    # ends the process with our exit code instead of the default "killed by signal".
    signal.signal(signal.SIGTERM, lambda *_: None)
    raise SystemExit(run_on_uvloop(serve(settings, sock=sock, deployment=deployment)))


if __name__ == "__main__":
    main()
