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
              extra_env: dict[str, str] | None = None, *, sigint_ignored: bool = False) -> subprocess.Popen[str]:
    """`workbench run` in a process of its own; ``sigint_ignored``: started as `cmd &` from a script starts
    it, with SIGINT inherited ignored."""
    env = {**os.environ, "WORKBENCH_FAKE_DELAY_S": str(delay_s), "WORKBENCH_HOME": str(home), **(extra_env or {})}
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    return subprocess.Popen([sys.executable, "-m", "workbench", "run", str(spec), "--tracking-uri", tracking_uri,
                             "--no-progress", "--grids-dir", str(spec.parent / "grids")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=ignore)


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


@pytest.mark.parametrize(("signum", "sigint_ignored"), [(signal.SIGINT, False), (signal.SIGTERM, False),
                                                       (signal.SIGINT, True)],
                         ids=["ctrl-c", "sigterm", "sigint-inherited-ignored"])
def test_ctrl_c_flushes_finished_work_and_marks_the_run(tmp_path: Path, tracking_uri: str,
                                                        workbench_home: Path, signum: int,
                                                        sigint_ignored: bool) -> None:
    """Ctrl-C, and SIGTERM (what `kill`, systemd and schedulers send) handled the same way; SIGINT also in a
    run started with it ignored (`workbench run … &` from a script), where Python would leave it ignored."""
    spec = write_spec(tmp_path, "interrupted")
    tracker = Tracker(tracking_uri)
    proc = start_run(spec, tracking_uri, delay_s=0.3, home=workbench_home, sigint_ignored=sigint_ignored)
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


def test_the_same_spec_run_twice_at_once_generates_each_image_once(tmp_path: Path, tracking_uri: str,
                                                                   workbench_home: Path) -> None:
    """Whichever run reaches the store second waits for the other (the experiment's lease), then finds
    nothing left to do."""
    spec = write_spec(tmp_path, "twice")
    procs = [start_run(spec, tracking_uri, delay_s=0.3, home=workbench_home,
                       extra_env={"WORKBENCH_LEASE_POLL_S": "0.2"}) for _ in range(2)]
    outputs = [proc.communicate(timeout=240)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    # exactly one waited: a round both lost to the other's try is contention, and is not reported
    assert sum("another run is generating" in text for text in outputs) == 1, outputs
    worker, waiter = sorted(outputs, key=lambda text: "another run is generating" in text)
    assert "24 planned: 24 generated" in worker, outputs
    assert "another run is generating into experiment 'twice'" in waiter, outputs
    assert "24 planned: 0 generated, 24 already logged (skipped)" in waiter
    assert "none (nothing was left to generate)" in waiter
    assert_complete_and_unique(tracking_uri, "twice", 24)
    parents = Tracker(tracking_uri).records("twice", kind="parent")  # the waiter's parent is not left behind
    assert [p.status for p in parents] == ["FINISHED"]


def test_a_crashed_lease_holder_does_not_block_the_next_run(tmp_path: Path, tracking_uri: str,
                                                            workbench_home: Path, fake_backend,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Holders that died: a process gone on this host, and a run on another host whose heartbeat stopped."""
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.experiment_id("crashed")
    assert experiment_id is not None
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    holders = {
        "dead pid": tracker.start_parent(experiment_id, name="dead", tags={"workbench.lease": "held"}),
        "stale heartbeat": tracker.start_parent(experiment_id, name="elsewhere", tags={"workbench.lease": "held"}),
    }
    tracker.set_tags(holders["dead pid"], {"workbench.pid": dead})
    tracker.set_tags(holders["stale heartbeat"], {"workbench.host": "another-host.example",
                                                  "workbench.heartbeat": str(int(time.time()) - 600)})
    monkeypatch.setenv("WORKBENCH_LEASE_TTL_S", "60")
    monkeypatch.setenv("WORKBENCH_LEASE_POLL_S", "0.1")
    waits: list[str] = []
    summary = run_experiment(write_spec(tmp_path, "crashed"), tracking_uri=tracking_uri, progress=False,
                             make_grids=False, on_wait=waits.append)
    assert waits == [] and summary.finished == 24 and summary.ok
    client = MlflowClient(tracking_uri)
    for run_id in holders.values():  # both marked KILLED with the reason, not left RUNNING
        run = client.get_run(run_id)
        assert run.info.status == "KILLED" and "died before it finished" in run.data.tags["workbench.status_reason"]


def test_a_live_lease_holder_on_another_host_is_waited_for(tmp_path: Path, tracking_uri: str, fake_backend,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.experiment_id("shared")
    assert experiment_id is not None
    holder = tracker.start_parent(experiment_id, name="elsewhere", tags={"workbench.lease": "held"})
    tracker.set_tags(holder, {"workbench.host": "another-host.example", "workbench.heartbeat": str(int(time.time()))})
    monkeypatch.setenv("WORKBENCH_LEASE_POLL_S", "0.1")
    waits: list[str] = []

    def holder_ends(message: str) -> None:  # the other host's run finishes while this one waits
        waits.append(message)
        tracker.end_run(holder)

    summary = run_experiment(write_spec(tmp_path, "shared"), tracking_uri=tracking_uri, progress=False,
                             make_grids=False, on_wait=holder_ends)
    assert len(waits) == 1 and holder in waits[0] and "another-host.example" in waits[0]
    assert summary.finished == 24 and summary.waited_for == holder


def kill_replicate_sweep(standin, name: str, tmp_path: Path, tracking_uri: str, home: Path,  # type: ignore[no-untyped-def]
                         *, after_s: float = 0.0) -> tuple[Path, dict[str, str]]:
    """Start a 6-image Replicate sweep against ``standin`` and kill -9 it once 4 predictions exist (the
    backend's concurrency) and ``after_s`` more have passed; returns its spec and environment."""
    from tests.standins import FAKE_REPLICATE_TOKEN

    spec = tmp_path / f"{name}.yaml"
    spec.write_text(f"name: {name}\nprompt: a lighthouse at dusk\nbackend: replicate\n"
                    "model: black-forest-labs/flux-schnell\nparams: {width: 1024, height: 1024, steps: 4}\n"
                    "seeds: [1, 2, 3, 4, 5, 6]\n")
    env = {"REPLICATE_API_TOKEN": FAKE_REPLICATE_TOKEN, "REPLICATE_BASE_URL": standin.base_url,
           "REPLICATE_POLL_INTERVAL": "0.05"}
    proc = start_run(spec, tracking_uri, delay_s=0, home=home, extra_env=env)
    deadline = time.monotonic() + 90
    while len(standin.created) < 4 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.05)
    time.sleep(after_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert len(standin.created) == 4 and not Tracker(tracking_uri).records(name, statuses=["FINISHED"])
    return spec, env


def run_again_here(spec: Path, env: dict[str, str], tracking_uri: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The next `workbench run` of the spec, in this process (a fresh Replicate backend)."""
    from workbench.backends import registry

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delitem(registry._instances, "replicate", raising=False)
    return run_experiment(spec, tracking_uri=tracking_uri, progress=False, make_grids=False)


def test_replicate_kill_9_inside_held_creates_pays_for_nothing_twice(tmp_path: Path, tracking_uri: str,
                                                                    workbench_home: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed while its creates are held open (`Prefer: wait`), a run never saw their ids: the next run finds
    those predictions in the account's list (same model and inputs) and fetches them."""
    import replicate

    from tests.standins import FAKE_REPLICATE_TOKEN
    from tests.standins.replicate_server import ReplicateStandin

    journal = workbench_home / "replicate" / "predictions"  # the session's: other tests' entries may be in it
    before = set(journal.glob("*.json"))
    # Predictions of 4 s and creates that wait up to 60 s for them: the kill lands inside the creates.
    standin = ReplicateStandin(processing_s=4.0, max_wait_s=60).start()
    standin.page_size = 3  # the search has to follow the list's `next` links
    try:
        spec, env = kill_replicate_sweep(standin, "held", tmp_path, tracking_uri, workbench_home)
        in_flight = {p.id for p in standin.created}
        creates = standin.requests_to("create")
        assert len(creates) == 4 and all("wait" in r.headers.get("prefer", "") for r in creates)  # no id came back
        standin.processing_s = 0.04
        # since then, another prediction of the same model with other inputs (the account's other work)
        client = replicate.Client(api_token=FAKE_REPLICATE_TOKEN, base_url=standin.base_url)
        unrelated = client.models.predictions.create(model="black-forest-labs/flux-schnell",
                                                     input={"prompt": "a lighthouse at dusk", "seed": 99})
        summary = run_again_here(spec, env, tracking_uri, monkeypatch)
        assert summary.finished == 6 and summary.ok
        assert_complete_and_unique(tracking_uri, "held", 6)
        assert len(standin.created) == 7  # six images, six predictions (and the unrelated one): none paid twice
        records = [r for r in Tracker(tracking_uri).records("held") if r.status == "FINISHED"]
        ids = {r.tags["workbench.id.prediction_id"] for r in records}
        assert in_flight <= ids and len(ids) == 6 and unrelated.id not in ids
        # each seed got its own prediction back: the inputs were matched, not just the model
        by_seed = {int(r.params["seed"]): r.tags["workbench.id.prediction_id"] for r in records}
        assert all(standin.predictions[pid].input["seed"] == seed for seed, pid in by_seed.items())
        assert standin.requests_to("list")
        assert set(journal.glob("*.json")) <= before  # every note and id dropped once its output was fetched
    finally:
        standin.stop()


def test_replicate_kill_9_mid_sweep_pays_for_nothing_twice(tmp_path: Path, tracking_uri: str,
                                                           workbench_home: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Predictions in flight when `workbench run` dies are fetched by the next run, not created again."""
    from tests.standins.replicate_server import ReplicateStandin

    journal = workbench_home / "replicate" / "predictions"  # the session's: other tests' entries may be in it
    before = set(journal.glob("*.json"))
    # Slow predictions, and a create that answers at once (202): the kill lands while they are polled.
    standin = ReplicateStandin(processing_s=4.0, max_wait_s=0.05).start()
    try:
        # past the create answers (0.3 s): the ids are recorded, the polls are under way
        spec, env = kill_replicate_sweep(standin, "paid", tmp_path, tracking_uri, workbench_home, after_s=0.3)
        in_flight = {p.id for p in standin.created}
        standin.processing_s = 0.04
        summary = run_again_here(spec, env, tracking_uri, monkeypatch)
        assert summary.finished == 6 and summary.ok
        assert_complete_and_unique(tracking_uri, "paid", 6)
        assert len(standin.created) == 6  # six images, six predictions: the four in flight were not paid twice
        ids = {r.tags["workbench.id.prediction_id"] for r in Tracker(tracking_uri).records("paid")
               if r.status == "FINISHED"}
        assert in_flight <= ids and len(ids) == 6
        # every output fetched, every entry dropped: a reproduction would make a new prediction
        assert set(journal.glob("*.json")) <= before
    finally:
        standin.stop()
