"""`--executor ray` on a real local Ray cluster: same images as locally, a worker killed mid-sweep, faults."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from workbench.errors import UserInputError
from workbench.experiment import parse_spec
from workbench.ray_executor import WORKER_TAG, RayOptions
from workbench.runner import run_experiment
from workbench.tracking import Tracker

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_cluster(session_home: Path):  # type: ignore[no-untyped-def]
    """One local Ray for the module (starting one takes ~10 s here); workers see WORKBENCH_HOME."""
    os.environ["WORKBENCH_HOME"] = str(session_home)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def fake_spec(name: str, seeds: int, **extra):  # type: ignore[no-untyped-def]
    return parse_spec({"name": name, "prompt": "a green circle", "backend": "fake", "model": "m",
                       "params": {"width": 32, "height": 32, "steps": 2}, "seeds": list(range(1, seeds + 1)),
                       "max_batch": 1, **extra})


def finished_keys(tracking_uri: str, experiment: str) -> Counter[str]:
    return Counter(r.run_key for r in Tracker(tracking_uri).records(experiment, statuses=["FINISHED"]))


def test_ray_sweep_matches_the_local_executor_bit_for_bit(ray_cluster, embedded_model: Path, tracking_uri: str,
                                                           tmp_path: Path) -> None:
    spec = parse_spec({"name": "same", "prompt": "a red circle on a white background", "backend": "diffusers",
                       "model": "embedded:tiny-sd", "params": {"width": 64, "height": 64, "steps": 4},
                       "seeds": [1, 2], "vary": {"guidance": [3, 8]}, "max_batch": 2})
    local = run_experiment(spec, tracking_uri=tracking_uri, experiment="same-local", progress=False,
                           grids_dir=tmp_path / "g-local")
    remote = run_experiment(spec, tracking_uri=tracking_uri, experiment="same-ray", progress=False,
                            grids_dir=tmp_path / "g-ray", ray=RayOptions(workers=2))
    assert local.ok and remote.ok and local.finished == remote.finished == 6, remote.stopped
    tracker = Tracker(tracking_uri)
    by_key = {e: {r.run_key: r for r in tracker.records(e)} for e in ("same-local", "same-ray")}
    assert by_key["same-local"].keys() == by_key["same-ray"].keys()
    workers = set()
    for key, record in by_key["same-ray"].items():
        workers.add(record.tags[WORKER_TAG])
        ours = np.asarray(tracker.load_image(record.run_id))
        theirs = np.asarray(tracker.load_image(by_key["same-local"][key].run_id))
        assert np.array_equal(ours, theirs), f"run key {key}: the Ray image differs from the local one"
    assert len(workers) == 2  # both workers generated
    assert {p.name for p in remote.grids} == {"grid-guidance.png"}
    again = run_experiment(spec, tracking_uri=tracking_uri, experiment="same-ray", progress=False,
                           grids_dir=tmp_path / "g-ray", ray=RayOptions(workers=2))
    assert again.skipped == 6 and again.finished == 0  # resume works by run key, as locally


def test_killing_a_worker_mid_sweep_loses_only_its_in_flight_batches(ray_cluster, tracking_uri: str,
                                                                      tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WORKBENCH_FAKE_DELAY_S", "0.4")  # forwarded to the workers
    spec = fake_spec("killed", 12, vary={"guidance": [3, 9]})  # 36 images, one per batch
    tracker = Tracker(tracking_uri)
    victim: list[str] = []

    def kill_a_worker() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                records = tracker.records("killed", statuses=["FINISHED"])
            except Exception:
                records = []
            if len(records) >= 4:
                victim.append(records[0].tags[WORKER_TAG])
                os.kill(int(victim[0].rsplit(":", 1)[1]), signal.SIGKILL)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_a_worker)
    killer.start()
    summary = run_experiment(spec, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path / "g",
                             ray=RayOptions(workers=2))
    killer.join()
    assert victim, "no worker was killed"
    assert summary.worker_deaths == 1 and summary.ok, summary.stopped
    assert summary.finished == 36 and summary.failed == 0
    keys = finished_keys(tracking_uri, "killed")
    assert len(keys) == 36 and set(keys.values()) == {1}  # every image once, none twice
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([tracker.experiment_id("killed")], "tags.`workbench.kind` = 'image'")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    after = [r for r in runs if r.data.tags.get(WORKER_TAG) not in (None, victim[0])]
    assert len({r.data.tags[WORKER_TAG] for r in after}) >= 2  # a replacement worker joined the survivor


def test_failures_are_isolated_and_fatal_errors_stop_the_sweep(ray_cluster, tracking_uri: str,
                                                               tmp_path: Path) -> None:
    spec = fake_spec("faults", 3, vary={"option.fault": ["none", "error"]})
    summary = run_experiment(spec, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path / "g",
                             ray=RayOptions(workers=2))
    assert summary.stopped is None and summary.failed == 3 and summary.finished == 6
    failed = Tracker(tracking_uri).records("faults", statuses=["FAILED"])
    assert {r.params["option.fault"] for r in failed} == {"error"}
    assert all("RuntimeError: the fake backend was asked to fail" in r.reason for r in failed)

    fatal = fake_spec("fatal", 2, options={"fault": "auth"})
    summary = run_experiment(fatal, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path / "g",
                             ray=RayOptions(workers=1))
    assert summary.stopped and summary.stopped.startswith("AuthenticationError:"), summary.stopped
    assert summary.finished == 0


def test_a_remote_cluster_cannot_write_to_a_local_sqlite_store(tracking_uri: str, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="run a tracking server"):
        run_experiment(fake_spec("nowhere", 1), tracking_uri=tracking_uri, progress=False,
                       grids_dir=tmp_path / "g", ray=RayOptions(address="10.11.12.13:6379"))


def test_cli_refuses_ray_options_without_the_ray_executor(tmp_path: Path, tracking_uri: str) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nprompt: a cat\nbackend: fake\nmodel: m\nseeds: [1]\n")
    proc = subprocess.run([sys.executable, "-m", "workbench", "run", str(spec), "--tracking-uri", tracking_uri,
                           "--workers", "2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--address and --workers need --executor ray" in proc.stderr
