"""`workbench ui`: a light local MLflow UI (one worker, no job runner), and nothing of it left after it stops.

The real console script starts the real `mlflow server` on a real SQLite store; psutil sees every process it
started, and after each way of stopping it none may still run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

WORKBENCH = Path(sys.executable).with_name("workbench")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_serving(port: int, process: subprocess.Popen[bytes], timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else "ui exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the UI did not answer on port {port} in {timeout_s} s")


def wait_for_the_whole_tree(process: subprocess.Popen[bytes], timeout_s: float = 300) -> None:
    """Until the server's uvicorn exists: every process the UI will start has started."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else "ui exited"
        if any("uvicorn" in " ".join(p.cmdline()) for p in psutil.Process(process.pid).children(recursive=True)):
            return
        time.sleep(0.2)
    raise AssertionError("the UI's server never started uvicorn")


def alive(processes: list[psutil.Process]) -> list[str]:
    left = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{p.pid} {' '.join(p.cmdline()[:4])}")
        except psutil.NoSuchProcess:
            pass
    return left


@pytest.mark.timeout(900)  # a hang guard; on an idle 2-core machine each case takes 5-25 s
# SIGTERM once it serves (answering is part of the test); the others as soon as the whole tree exists: the
# server's first answer takes ~20 s on 2 cores, and stopping it mid-start must leave nothing behind as well.
@pytest.mark.parametrize("how", ["sigterm", "sigint", "ctrl-c"])
def test_ui_is_light_and_leaves_nothing_running(how: str, tracking_uri: str, tmp_path: Path) -> None:
    port = free_port()
    # A session of its own, as a shell gives a foreground job: Ctrl-C is SIGINT to that whole group.
    ui = subprocess.Popen([str(WORKBENCH), "ui", "--tracking-uri", tracking_uri, "--port", str(port)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path)
    try:
        if how == "sigterm":
            wait_until_serving(port, ui)
        else:
            wait_for_the_whole_tree(ui)
        started = psutil.Process(ui.pid).children(recursive=True)
        commands = [" ".join(p.cmdline()) for p in started]
        # mlflow server and its one uvicorn: no gunicorn/uvicorn worker pool, no job runner, no huey consumers
        assert len(started) <= 3, commands
        assert not [c for c in commands if "huey" in c or "job" in c], commands
        assert any("--workers 1" in c for c in commands), commands
        if how == "sigterm":
            ui.send_signal(signal.SIGTERM)
        elif how == "sigint":
            ui.send_signal(signal.SIGINT)
        else:
            os.killpg(ui.pid, signal.SIGINT)
        assert ui.wait(timeout=60) == 0
        deadline = time.monotonic() + 5  # the group is gone once the UI returned; allow the kernel a moment
        while alive(started) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert alive(started) == [], f"still running after {how}"
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
        assert not (tmp_path / "mlartifacts").exists() and not (tmp_path / "mlruns").exists()  # nothing in cwd
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGKILL)
        for p in psutil.Process().children(recursive=True):
            if "mlflow" in " ".join(p.cmdline()):
                p.kill()


def test_ui_on_a_store_that_does_not_exist_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "mlflow.db"
    result = subprocess.run([str(WORKBENCH), "ui", "--tracking-uri", f"sqlite:///{missing}"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"no MLflow store at sqlite:///{missing}" in result.stderr and "looking creates nothing" in result.stderr
    assert not (tmp_path / "no").exists()
