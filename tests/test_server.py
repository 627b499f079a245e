"""Against a real `mlflow server` on 127.0.0.1: the remote path, and a server that dies mid-sweep."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from workbench.errors import TrackingError
from workbench.experiments.spec import parse_spec
from workbench.run.runner import run_experiment
from workbench.tracking.spool import pending
from workbench.tracking.store import Tracker

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MlflowServer:
    def __init__(self, root: Path, db: Path) -> None:
        self.root, self.db, self.port = root, db, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120) -> None:
        mlflow = Path(sys.executable).with_name("mlflow")
        self.proc = subprocess.Popen(
            [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{self.db}", "--artifacts-destination",
             str(self.root / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            # MLflow 3's job runner (8 more processes, ~2 GB) is never used by workbench.
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as response:
                    if response.read().strip() == b"OK":
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("mlflow server did not become healthy")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, migrated_db: Path):  # type: ignore[no-untyped-def]
    """One server for the module (it takes ~20 s to start here); tests use their own experiments."""
    root = tmp_path_factory.mktemp("mlflow-server")
    db = root / "server.db"
    shutil.copy(migrated_db, db)
    srv = MlflowServer(root, db)
    srv.start()
    yield srv
    srv.stop()


def spec(seeds: int, name: str = "remote"):  # type: ignore[no-untyped-def]
    return parse_spec({"name": name, "prompt": "a blue triangle", "backend": "fake", "model": "m",
                       "params": {"width": 32, "height": 32, "steps": 2}, "seeds": list(range(1, seeds + 1)),
                       "vary": {"guidance": [3, 9]}, "max_batch": 1})


def test_a_remote_server_works_unchanged(server: MlflowServer, fake_backend, tmp_path: Path) -> None:
    summary = run_experiment(spec(2), tracking_uri=server.uri, progress=False, grids_dir=tmp_path / "g")
    assert summary.ok and summary.finished == 6
    client = MlflowClient(server.uri)
    runs = client.search_runs([client.get_experiment_by_name("remote").experiment_id],
                              "tags.`workbench.kind` = 'image'")
    assert len(runs) == 6 and runs[0].info.artifact_uri.startswith("mlflow-artifacts:")
    assert Tracker(server.uri).load_image(runs[0].info.run_id).size == (32, 32)
    assert summary.grids and summary.grids[0].is_file()
    again = run_experiment(spec(2), tracking_uri=server.uri, progress=False, grids_dir=tmp_path / "g")
    assert again.skipped == 6 and again.finished == 0


def test_server_dying_mid_sweep_loses_nothing(server: MlflowServer, fake_backend, tmp_path: Path) -> None:
    fake_backend.delay_s = 0.25
    box: dict[str, object] = {}
    worker = threading.Thread(target=lambda: box.update(summary=run_experiment(
        spec(6, 'dying'), tracking_uri=server.uri, progress=False, grids_dir=tmp_path / "g")))
    worker.start()
    tracker = Tracker(server.uri)
    deadline = time.monotonic() + 60
    while len(tracker.records("dying", statuses=["FINISHED"])) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    server.stop()
    worker.join(timeout=300)
    summary = box["summary"]
    assert summary.stopped and "stopped taking writes" in summary.stopped  # type: ignore[attr-defined]
    spooled = pending(server.uri)
    assert spooled and len(spooled) == len(summary.spooled)  # type: ignore[attr-defined]
    with pytest.raises(TrackingError, match="cannot reach the MLflow tracking server"):
        run_experiment(spec(6, 'dying'), tracking_uri=server.uri, progress=False)
    server.start()  # same port, same database
    fake_backend.delay_s = 0.0
    final = run_experiment(spec(6, 'dying'), tracking_uri=server.uri, progress=False, grids_dir=tmp_path / "g")
    assert final.ok and pending(server.uri) == []
    records = Tracker(server.uri).records("dying", statuses=["FINISHED"])
    keys = [r.run_key for r in records]
    assert len(keys) == 18 and len(set(keys)) == 18  # every image once, the spooled ones included
    assert any(r.tags.get("workbench.spooled") == "true" for r in records)
