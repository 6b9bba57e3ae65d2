"""A new user's first minute: a `./workspace` that uid 1000 may not write, and a port already taken.

The image's entrypoint (scripts/docker-entrypoint.sh) is run here as Docker runs it: as root with
a root-owned workspace (it must hand that one directory to uid 1000 and start the server as uid
1000), and as another uid (`docker run --user`: it runs as that uid and changes nothing). The
server itself refuses a log file it cannot open, and a taken port, with one line and exit 2,
before any engine process starts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from .conftest import ROOT, wait_until
from .helpers import ENTRYPOINT, free_port

ENTRYPOINT_SCRIPT = ROOT / "scripts" / "docker-entrypoint.sh"
SERVICE_UID = 1000
OTHER_UID = 1234

needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A directory every uid can enter (pytest's own tmp_path is root's alone): the host side."""
    path = Path(tempfile.mkdtemp(prefix="rerank-first-run-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def server_flags(port: int, model: Path) -> list[str]:
    """The engine never gets far in these tests: each stops the server once it has seen what it needs."""
    return ["--model", str(model), "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32"]


def as_uid(uid: int) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]


def start(cmd: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **env}
    return subprocess.Popen(
        cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def stop(proc: subprocess.Popen) -> tuple[str, str]:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.communicate(timeout=60)


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int, int]]:
    """Owner, group and mode of everything under `root` but `skip`'s contents."""
    found = {}
    for path in [root, *root.rglob("*")]:
        if skip in path.parents:
            continue
        st = path.lstat()
        found[str(path)] = (st.st_uid, st.st_gid, st.st_mode)
    return found


def serving_uid(port: int, proc: subprocess.Popen) -> int:
    """The uid of the process that answers /health on `port` (once it does)."""
    ok = wait_until(lambda: proc.poll() is not None or _health(port), timeout=180, interval=0.2)
    assert ok and proc.poll() is None, stop(proc)
    for conn in psutil.net_connections("tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            return psutil.Process(conn.pid).uids().effective
    raise AssertionError("nobody listens on the port")


def _health(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.engine  # the test model's files
@needs_root
def test_entrypoint_as_root_hands_the_workspace_to_uid_1000_and_runs_the_server_as_it(host_dir, tiny_model):
    workspace = host_dir / "workspace"
    workspace.mkdir(mode=0o755)  # what `mkdir -p workspace` in a root shell makes
    (host_dir / "other.txt").write_text("the user's own file")
    model = Path(shutil.copytree(tiny_model, host_dir / "model"))
    subprocess.run(["chmod", "-R", "a+rX", str(model)], check=True)  # readable for uid 1000, as the README asks
    before = snapshot(host_dir, workspace)
    port = free_port()
    proc = start(
        [str(ENTRYPOINT_SCRIPT), *ENTRYPOINT, *server_flags(port, model)],
        cwd=workspace,
        RERANK_WORKSPACE=str(workspace),
        RERANK_LOG_FILE=str(workspace / "vllm.log"),
    )
    try:
        assert serving_uid(port, proc) == SERVICE_UID
        log = workspace / "vllm.log"
        assert wait_until(lambda: log.exists() and "settings:" in log.read_text(), timeout=60), stop(proc)
        assert log.stat().st_uid == SERVICE_UID
    finally:
        _, stderr = stop(proc)
    assert workspace.stat().st_uid == SERVICE_UID and f"giving it to uid {SERVICE_UID}" in stderr
    after = snapshot(host_dir, workspace)
    after[str(workspace)] = before[str(workspace)]  # the one thing it may change
    assert after == before


@needs_root
def test_entrypoint_as_another_uid_runs_as_that_uid_and_changes_nothing(host_dir):
    """`docker run --user 1234` on a workspace of uid 1234: the command runs as 1234, untouched.

    The command here is a shell one, not the server: this machine's Python lives under /root
    (mode 700), which a shell running as another uid may not exec (the image's Python is in /usr).
    The server running as a non-root uid is what the other tests of this file show."""
    workspace = host_dir / "workspace"
    workspace.mkdir(mode=0o755)
    os.chown(workspace, OTHER_UID, OTHER_UID)
    before = snapshot(host_dir, workspace)
    command = ["sh", "-c", 'id -u > "$RERANK_WORKSPACE/ran-as"']
    proc = start([*as_uid(OTHER_UID), str(ENTRYPOINT_SCRIPT), *command], cwd=host_dir, RERANK_WORKSPACE=str(workspace))
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stdout + stderr
    assert (workspace / "ran-as").read_text().strip() == str(OTHER_UID)
    assert (workspace / "ran-as").stat().st_uid == OTHER_UID
    assert "giving it" not in stderr
    assert snapshot(host_dir, workspace) == before


@pytest.mark.engine  # the test model's files
@needs_root
def test_a_log_file_the_server_cannot_write_is_one_line_and_exit_2(host_dir, tiny_model):
    """The crash loop of a root-owned ./workspace without the entrypoint: one line, no traceback."""
    workspace = host_dir / "workspace"
    workspace.mkdir(mode=0o755)  # root's; the server runs as uid 1000
    log = workspace / "vllm.log"
    proc = start(
        [*as_uid(SERVICE_UID), *ENTRYPOINT, *server_flags(free_port(), tiny_model), "--log-file", str(log)],
        cwd=host_dir,
        HOME=str(host_dir),
    )
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stdout + stderr, stderr
    assert str(log) in lines[0] and f"uid {SERVICE_UID}" in lines[0] and "chown" in lines[0], lines[0]
    assert not log.exists()


@pytest.mark.engine  # the test model's files
@needs_root
def test_a_model_directory_the_server_cannot_read_is_one_line_and_exit_2(host_dir, tiny_model):
    """A mounted model that uid 1000 may not read: one line naming the path, the file and the uid."""
    model = host_dir / "model"
    shutil.copytree(tiny_model, model)
    subprocess.run(["chmod", "-R", "a+rX", str(model)], check=True)
    os.chmod(model / "config.json", 0o600)  # root's alone
    flags = server_flags(free_port(), tiny_model)
    flags[flags.index("--model") + 1] = str(model)
    proc = start([*as_uid(SERVICE_UID), *ENTRYPOINT, *flags, "--log-file", ""], cwd=host_dir, HOME=str(host_dir))
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stdout + stderr, stderr
    assert str(model) in lines[0] and "config.json" in lines[0] and f"uid {SERVICE_UID}" in lines[0], lines[0]


def test_a_model_path_that_does_not_exist_is_one_line_and_exit_2(tmp_path):
    missing = tmp_path / "no-such-model"
    proc = start([*ENTRYPOINT, "--model", str(missing), "--port", str(free_port())], cwd=tmp_path)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stdout + stderr
    [line] = stderr.strip().splitlines()
    assert str(missing) in line and "no such file or directory" in line, line


@pytest.mark.engine  # the test model's files
@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_taken_port_is_one_line_and_exit_before_any_engine_starts(tmp_path, tiny_model, processes):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = start([*ENTRYPOINT, *server_flags(port, tiny_model), "--api-processes", processes], cwd=tmp_path)
        engine_seen = []

        def exited() -> bool:
            with contextlib.suppress(psutil.Error):
                engine_seen.extend(c.pid for c in psutil.Process(proc.pid).children(recursive=True))
            return proc.poll() is not None

        assert wait_until(exited, timeout=120, interval=0.05), stop(proc)
        stdout, stderr = proc.communicate()
    assert proc.returncode == 2, stdout + stderr
    assert not engine_seen, "the server started processes before it found the port taken"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert f"127.0.0.1:{port}" in lines[0] and "--port" in lines[0], lines[0]
    assert not (tmp_path / "vllm.log").exists() or "starting vLLM" not in (tmp_path / "vllm.log").read_text()
