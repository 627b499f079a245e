"""``workbench ui``: a light local MLflow UI on the store, and nothing left running after it stops.

``mlflow ui`` on its own starts about 14 processes (4 uvicorn workers, MLflow's job runner, 7 huey
consumers), takes 20–30 s to answer on a laptop, and leaves some serving after SIGTERM or Ctrl-C. Here it is
``mlflow server`` with one worker and job execution off (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``: the
UI needs no job runner), started in a session of its own. SIGTERM, SIGINT (also Ctrl-C of our process
group) and the end of this process all stop that whole session: SIGTERM first, SIGKILL after a grace period.
On Linux the server also dies with us if we are killed outright (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from ..config import default_artifact_root

__all__ = ["ui_command", "serve_ui"]

GRACE_S = 10.0  # how long the server may take to stop on SIGTERM before its whole session is killed


def ui_command(uri: str, host: str, port: int) -> list[str]:
    """The ``mlflow server`` command line of a light local UI on store ``uri``."""
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    return [mlflow, "server", "--backend-store-uri", uri, "--host", host, "--port", str(port), "--workers", "1",
            # where experiments made in the UI keep their artifacts: the home, never the current directory
            "--default-artifact-root", default_artifact_root().as_uri(), "--no-serve-artifacts"]


class _Stop(Exception):
    """Raised by our signal handler: it ends the wait, and the stopping happens outside the handler."""


def serve_ui(uri: str, host: str, port: int) -> int:
    """Run the UI until it exits or we are told to stop; returns its exit code (0 after a stop we asked for)."""
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(ui_command(uri, host, port), env=env, start_new_session=True,
                              preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def stop(signum: int, _frame: FrameType | None) -> None:
        for sig in signals:  # a second Ctrl-C must not interrupt the stopping
            signal.signal(sig, signal.SIG_IGN)
        raise _Stop(signum)

    previous = {sig: signal.signal(sig, stop) for sig in signals}
    try:
        return server.wait()
    except _Stop:
        return 0
    finally:
        _stop_session(server)  # whatever ended the wait: nothing of the session stays behind
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_session(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's session (its process group); SIGKILL to whatever is left after the grace period."""
    _signal_group(server.pid, signal.SIGTERM)
    try:
        server.wait(GRACE_S)  # MLflow forwards the signal to uvicorn and waits for it
    except subprocess.TimeoutExpired:
        pass
    _signal_group(server.pid, signal.SIGKILL)  # the group outlives its leader while a member is left
    server.wait()


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the ``workbench ui`` process dies, however it dies."""
    import ctypes

    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass
