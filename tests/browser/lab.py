"""JupyterLab on loopback for browser tests, and Debian's Chromium.

``jupyterlab(...)`` starts ``python -m jupyterlab`` on 127.0.0.1 (a free port, a random token, no
browser, an isolated config/runtime/settings/workspace folder, news and update checks off), waits
until ``/api/status`` answers, and always shuts it down: ``/api/shutdown`` first (kernels included),
then SIGTERM/SIGKILL to its process group.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CHROMIUM_ARGS", "find_chromium", "LabServer", "jupyterlab"]

# Debian's chromium, headless and quiet: no sandbox (root in CI), no GPU, nothing fetched from outside.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def find_chromium() -> str | None:
    """``$WORKBENCH_CHROMIUM``, else Debian's ``/usr/bin/chromium``, else one on PATH; None if there is none."""
    for candidate in (os.environ.get("WORKBENCH_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass(frozen=True)
class LabServer:
    url: str
    token: str
    log: Path

    def notebook_url(self, path: str) -> str:
        return f"{self.url}/lab/tree/{path}?token={self.token}"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no server log)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(url: str, token: str, method: str = "GET", timeout: float = 5.0) -> bytes:
    request = urllib.request.Request(url, method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()  # type: ignore[no-any-return]


def _write_settings(folder: Path) -> None:
    """User settings: no news or update toasts (they reach outside), every cell in the DOM."""
    settings = {
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
            {"fetchNews": "false", "checkForUpdates": False},
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    }
    for name, value in settings.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


@contextmanager
def jupyterlab(root_dir: Path, workdir: Path, env: Mapping[str, str], *, startup_timeout: float = 120.0
               ) -> Iterator[LabServer]:
    """JupyterLab serving ``root_dir``; kernels inherit ``env`` on top of this process's environment."""
    port, token = _free_port(), secrets.token_hex(16)
    for name in ("config", "runtime", "ipython", "settings", "workspaces"):
        (workdir / name).mkdir(parents=True, exist_ok=True)
    _write_settings(workdir / "settings")
    full_env = {**os.environ, **env, "JUPYTER_CONFIG_DIR": str(workdir / "config"),
                "JUPYTER_RUNTIME_DIR": str(workdir / "runtime"), "IPYTHONDIR": str(workdir / "ipython"),
                "JUPYTER_PLATFORM_DIRS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root_dir}",
               f"--LabApp.user_settings_dir={workdir / 'settings'}",
               f"--LabApp.workspaces_dir={workdir / 'workspaces'}", "--LabApp.news_url=",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               "--LabApp.extension_manager=readonly",
               # lets the test wait on the kernel's own status instead of guessing from the page
               "--LabApp.expose_app_in_browser=True"]
    log = workdir / "jupyterlab.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, env=full_env, stdout=out, stderr=subprocess.STDOUT, cwd=root_dir,
                                   start_new_session=True)
    server = LabServer(f"http://127.0.0.1:{port}", token, log)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {process.returncode}:\n{server.log_tail()}")
            try:
                _request(f"{server.url}/api/status", token, timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not answer in {startup_timeout:.0f} s:\n"
                                       f"{server.log_tail()}") from None
                time.sleep(0.25)
        yield server
    finally:
        _stop(process, server)


def _stop(process: subprocess.Popen[bytes], server: LabServer) -> None:
    if process.poll() is None:
        try:
            _request(f"{server.url}/api/shutdown", server.token, method="POST")
            process.wait(timeout=20)
        except Exception:
            pass
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)  # the server and the kernels it started
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    try:  # kernels that outlived a clean shutdown share the session: end them too
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
