"""Faults with real processes: kill -9, Ctrl-C, two sweeps into one store at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.standins import openai_env, openai_standin
from workbench.run.runner import run_experiment
from workbench.tracking.store import Tracker

__all__ = ["openai_env", "openai_standin"]  # fixtures, used through request.getfixturevalue

pytestmark = pytest.mark.slow

SPEC = """
name: {name}
prompt: a {{{{ colour }}}} square
variables: {{colour: red}}
backend: {backend}
model: {model}
params: {{width: {size}, height: {size}, steps: {steps}, guidance: 5}}
seeds: [1, 2, 3, 4, 5, 6, 7, 8]
vary:
  guidance: [2, 9]
max_batch: 1
"""
BACKENDS = {  # backend, model, size, steps
    "fake": ("fake", "m", 32, 2),
    "diffusers": ("diffusers", "embedded:tiny-sd", 32, 20),
    "openai": ("openai", "gpt-image-1-mini", 1024, 4),
}


def write_spec(folder: Path, name: str, backend: str = "fake") -> Path:
    path = folder / f"{name}.yaml"
    name_, model, size, steps = BACKENDS[backend]
    path.write_text(SPEC.format(name=name, backend=name_, model=model, size=size, steps=steps))
    return path


def start_run(spec: Path, tracking_uri: str, delay_s: float, home: Path,
              extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "WORKBENCH_FAKE_DELAY_S": str(delay_s), "WORKBENCH_HOME": str(home), **(extra_env or {})}
    return subprocess.Popen([sys.executable, "-m", "workbench", "run", str(spec), "--tracking-uri", tracking_uri,
                             "--no-progress", "--grids-dir", str(spec.parent / "grids")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_finished(tracker: Tracker, experiment: str, count: int, proc: subprocess.Popen[str],
                      timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.stdout.read() if proc.stdout else ''}")
        if len(tracker.records(experiment, statuses=["FINISHED"])) >= count:
            return
        time.sleep(0.2)
    raise AssertionError("timed out waiting for finished runs")


def assert_complete_and_unique(tracking_uri: str, experiment: str, expected: int) -> None:
    records = Tracker(tracking_uri).records(experiment)
    finished = [r for r in records if r.status == "FINISHED"]
    counts = Counter(r.run_key for r in finished)
    assert len(counts) == expected and set(counts.values()) == {1}, counts  # each image exactly once
    assert not [r for r in records if r.status == "RUNNING"]
    client = MlflowClient(tracking_uri)
    for record in finished:  # every finished run has its image
        assert "image.png" in {a.path for a in client.list_artifacts(record.run_id)}


@pytest.mark.parametrize("backend", ["fake", "diffusers", "openai"])
def test_kill_9_mid_sweep_then_resume(backend: str, tmp_path: Path, tracking_uri: str, workbench_home: Path,
                                      embedded_model: Path, request: pytest.FixtureRequest) -> None:
    spec = write_spec(tmp_path, "killed", backend)
    tracker = Tracker(tracking_uri)
    extra_env: dict[str, str] = {}
    if backend == "openai":  # the real SDK against the loopback stand-in, each call slowed to 0.4 s
        standin = request.getfixturevalue("openai_env")
        standin.script({"fault": "slow", "seconds": 0.4, "times": 1000})
        extra_env = {"OPENAI_API_KEY": os.environ["OPENAI_API_KEY"], "OPENAI_BASE_URL": standin.base_url}
    proc = start_run(spec, tracking_uri, delay_s=0.3, home=workbench_home, extra_env=extra_env)
    wait_for_finished(tracker, "killed", 4, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = len(tracker.records("killed", statuses=["FINISHED"]))
    assert before < 24
    client = MlflowClient(tracking_uri)
    experiment_id = tracker.experiment_id("killed")
    assert client.search_runs([experiment_id], "attributes.status = 'RUNNING'")  # the dead run is left RUNNING

    if backend == "openai":
        standin.reset()  # calls at full speed again
    summary = run_experiment(spec, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path / "g")
    assert summary.skipped == before and summary.finished == 24 - before and summary.ok
    assert_complete_and_unique(tracking_uri, "killed", 24)
    killed = client.search_runs([experiment_id], "attributes.status = 'KILLED'")
    assert any(r.data.tags.get("workbench.kind") == "parent" for r in killed)
    assert all("died before it finished" in r.data.tags["workbench.status_reason"] for r in killed)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_flushes_finished_work_and_marks_the_run(tmp_path: Path, tracking_uri: str,
                                                        workbench_home: Path, signum: int) -> None:
    """Ctrl-C, and SIGTERM (what `kill`, systemd and schedulers send) handled the same way."""
    spec = write_spec(tmp_path, "interrupted")
    tracker = Tracker(tracking_uri)
    proc = start_run(spec, tracking_uri, delay_s=0.3, home=workbench_home)
    wait_for_finished(tracker, "interrupted", 3, proc)
    proc.send_signal(signum)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, output
    assert "interrupted (Ctrl-C)" in output and "resume with: workbench run" in output
    client = MlflowClient(tracking_uri)
    parents = [r for r in client.search_runs([tracker.experiment_id("interrupted")])
               if r.data.tags.get("workbench.kind") == "parent"]
    assert [p.info.status for p in parents] == ["KILLED"]
    assert not client.search_runs([tracker.experiment_id("interrupted")], "attributes.status = 'RUNNING'")
    run_experiment(spec, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path / "g")
    assert_complete_and_unique(tracking_uri, "interrupted", 24)


def test_two_sweeps_into_one_store_at_once(tmp_path: Path, tracking_uri: str, workbench_home: Path) -> None:
    specs = [write_spec(tmp_path, "left"), write_spec(tmp_path, "right")]
    procs = [start_run(s, tracking_uri, delay_s=0.05, home=workbench_home) for s in specs]
    for proc in procs:
        output, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, output
    client = MlflowClient(tracking_uri)
    for name in ("left", "right"):
        assert_complete_and_unique(tracking_uri, name, 24)
        assert {r.params["prompt"] for r in Tracker(tracking_uri).records(name)} == {"a red square"}
        parent, = Tracker(tracking_uri).records(name, kind="parent")
        logged = {a.path for a in client.list_artifacts(parent.run_id, "grids")}
        assert logged == {"grids/grid-guidance.png"}, logged
    assert not list((tmp_path / "grids").glob("*.tmp.png"))  # the writers' temp files are gone
