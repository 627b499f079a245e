"""`--executor ray` on a real local Ray cluster: same images as locally, a worker killed mid-sweep, faults,
a shared `mlflow server`, the CLI with a Ray of its own, and clusters too small for the workers asked for.

Skipped where ray is not installed, failed instead when WORKBENCH_REQUIRE_RAY=1 (CI).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from tests.test_server import MlflowServer
from workbench.backends.fake import fake_image
from workbench.errors import UserInputError, WorkbenchError
from workbench.experiments.spec import parse_spec
from workbench.provenance.png import read_png_metadata
from workbench.run.batch import RetryPolicy
from workbench.run.context import ExecutionContext, ProgressBar, RunSummary
from workbench.run.plan import make_plan
from workbench.run.ray_executor import RayOptions, _Driver, _Job, _Slot
from workbench.run.runner import run_experiment
from workbench.tracking.logger import BackgroundLogger
from workbench.tracking.schema import WORKER_TAG
from workbench.tracking.store import Tracker
from workbench.types import GeneratedImage, GenerationFailure

try:
    import ray
except ImportError as exc:
    if os.environ.get("WORKBENCH_REQUIRE_RAY") == "1":
        pytest.fail(f"WORKBENCH_REQUIRE_RAY=1 but ray cannot be imported ({exc}); pip install -e '.[ray]'",
                    pytrace=False)
    pytest.skip(f"ray is not installed ({exc}); pip install -e '.[ray]'", allow_module_level=True)

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ray_cluster(session_home: Path):  # type: ignore[no-untyped-def]
    """One local Ray for the module (starting one takes ~10 s here); workers see WORKBENCH_HOME."""
    before = os.environ.get("WORKBENCH_HOME")
    os.environ["WORKBENCH_HOME"] = str(session_home)  # the raylet and its workers inherit it at ray.init
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()
    if before is None:
        os.environ.pop("WORKBENCH_HOME", None)
    else:
        os.environ["WORKBENCH_HOME"] = before


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory,
                  migrated_db: Path):  # type: ignore[no-untyped-def]
    """A real `mlflow server` on 127.0.0.1 (SQLite behind it, artifacts served), as tests/test_server.py's."""
    root = tmp_path_factory.mktemp("ray-mlflow-server")
    shutil.copy(migrated_db, root / "server.db")
    server = MlflowServer(root, root / "server.db")
    server.start()
    yield server
    server.stop()


def rest(uri: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """MLflow's REST API over plain HTTP (no MLflow client): JSON for /api/2.0/mlflow, bytes otherwise."""
    request = urllib.request.Request(uri + path, method="POST" if body is not None else "GET",
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        data = response.read()
    return json.loads(data) if path.startswith("/api/2.0/mlflow/") else data


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
        # the workers score their own batches: the same image statistics as the local logging threads
        local_metrics = by_key["same-local"][key].metrics
        assert {k: v for k, v in record.metrics.items() if k.startswith("image.")} == \
            {k: v for k, v in local_metrics.items() if k.startswith("image.")} and "image.sharpness" in local_metrics
    assert len(workers) == 2  # both workers generated
    assert {p.name for p in remote.grids} == {"grid-guidance.png"}
    again = run_experiment(spec, tracking_uri=tracking_uri, experiment="same-ray", progress=False,
                           grids_dir=tmp_path / "g-ray", ray=RayOptions(workers=2))
    assert again.skipped == 6 and again.finished == 0  # resume works by run key, as locally


def test_a_family_with_a_lora_on_ray_matches_the_local_executor(ray_cluster, tracking_uri: str,
                                                                 tmp_path: Path) -> None:
    """SDXL (a second text encoder, added time ids) with a LoRA swept over its scale, on two workers."""
    from tests import families

    model = families.build("sdxl", tmp_path / "sdxl")
    lora = families.build_lora(model, tmp_path / "lora")
    spec = parse_spec({"name": "family", "prompt": "a red circle", "backend": "diffusers", "model": str(model),
                       "params": {"width": 32, "height": 32, "steps": 2, "guidance": 4.0}, "seeds": [1],
                       "loras": [{"name": "style", "source": str(lora), "scale": 1.0}],
                       "vary": {"lora.style.scale": [0.0, 0.5]}, "max_batch": 1})
    local = run_experiment(spec, tracking_uri=tracking_uri, experiment="family-local", progress=False,
                           make_grids=False)
    remote = run_experiment(spec, tracking_uri=tracking_uri, experiment="family-ray", progress=False,
                            make_grids=False, ray=RayOptions(workers=2))
    assert local.finished == remote.finished == 3, remote.stopped
    tracker = Tracker(tracking_uri)
    theirs = {r.run_key: r for r in tracker.records("family-local")}
    for record in tracker.records("family-ray"):
        assert np.array_equal(np.asarray(tracker.load_image(record.run_id)),
                              np.asarray(tracker.load_image(theirs[record.run_key].run_id)))
    assert len({r.params["lora.style.scale"] for r in theirs.values()}) == 3


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
    # the summary lists every image with its run, those the killed worker logged before it died included
    finished = {r.info.run_id for r in runs if r.info.status == "FINISHED"}
    assert {r.outcome for r in summary.runs} == {"generated"} and {r.run_id for r in summary.runs} == finished
    assert len(summary.runs) == 36 and any(r.data.tags.get(WORKER_TAG) == victim[0] for r in runs
                                           if r.info.run_id in finished)
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


def test_a_ray_sweep_logs_through_a_shared_http_tracking_server(ray_cluster, mlflow_server: MlflowServer,
                                                                 tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WORKBENCH_FAKE_DELAY_S", "0.2")
    summary = run_experiment(fake_spec("over-http", 3, vary={"guidance": [3, 9]}),
                             tracking_uri=mlflow_server.uri, progress=False, grids_dir=tmp_path / "g",
                             ray=RayOptions(workers=2))
    assert summary.ok and summary.finished == 9, summary.stopped

    # What the server holds, read back through its REST API by plain HTTP.
    uri = mlflow_server.uri
    experiment_id = rest(uri, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=over-http")[
        "experiment"]["experiment_id"]
    runs = rest(uri, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id], "max_results": 100,
                                                      "filter": "tags.`workbench.kind` = 'image'"})["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"]["tags"]} for r in runs]
    assert len(runs) == 9 and {r["info"]["status"] for r in runs} == {"FINISHED"}
    assert len({t["workbench.run_key"] for t in tags}) == 9
    assert all(t["mlflow.parentRunId"] == summary.parent_run_id for t in tags)
    workers = {t[WORKER_TAG] for t in tags}
    assert len(workers) == 2, workers  # two Ray workers, each logging over HTTP itself
    parent = rest(uri, f"/api/2.0/mlflow/runs/get?run_id={summary.parent_run_id}")["run"]
    parent_tags = {t["key"]: t["value"] for t in parent["data"]["tags"]}
    assert parent_tags["workbench.executor"] == "ray (local cluster)"
    assert parent_tags["workbench.ray_workers"] == "2"

    run = runs[0]
    run_id = run["info"]["run_id"]
    assert run["info"]["artifact_uri"] == f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts"
    png = rest(uri, f"/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}/artifacts/image.png")
    meta = read_png_metadata(png)  # the request inside still hashes to its run key
    assert meta.run_id == run_id and meta.tracking_uri == uri
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(fake_image(meta.request())))


def test_the_cli_starts_and_stops_a_ray_of_its_own(tmp_path: Path, tracking_uri: str,
                                                    session_home: Path) -> None:
    spec = tmp_path / "cli-ray.yaml"
    spec.write_text("name: cli-ray\nprompt: a yellow star\nbackend: fake\nmodel: m\n"
                    "params: {width: 32, height: 32, steps: 1}\nseeds: [1, 2, 3]\nmax_batch: 1\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "run", str(spec), "--executor", "ray", "--workers", "1",
         "--tracking-uri", tracking_uri, "--no-progress", "--grids-dir", str(tmp_path / "grids")],
        env={**env, "WORKBENCH_HOME": str(session_home)}, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 planned: 3 generated, 0 already logged (skipped), 0 failed, 0 blocked" in proc.stdout
    assert "runs logged" in proc.stdout and "3 this run" in proc.stdout
    tracker = Tracker(tracking_uri)
    records = tracker.records("cli-ray", statuses=["FINISHED"])
    assert sorted(r.params["seed"] for r in records) == ["1", "2", "3"]
    workers = {r.tags[WORKER_TAG] for r in records}
    assert len(workers) == 1
    parent = tracker.client.get_run(records[0].tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["workbench.executor"] == "ray (local cluster)"
    # The Ray it started went with it: its worker process is gone (ray.shutdown ends it, not at once).
    pid = int(next(iter(workers)).rsplit(":", 1)[1])
    deadline = time.monotonic() + 60
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not running(pid), f"the Ray worker {pid} outlived `workbench run`"


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_more_workers_than_the_cluster_holds_are_capped_never_waited_for(ray_cluster, tracking_uri: str,
                                                                         tmp_path: Path, capfd) -> None:
    summary = run_experiment(fake_spec("capped", 4), tracking_uri=tracking_uri, progress=False,
                             grids_dir=tmp_path / "g", ray=RayOptions(workers=4))
    assert summary.ok and summary.finished == 4, summary.stopped
    note = "4 Ray workers were asked for, but the cluster (2 CPU(s) and 0 GPU(s)) holds 2 of 1 CPU each"
    assert note in capfd.readouterr().err
    parent = MlflowClient(tracking_uri).get_run(summary.parent_run_id).data.tags
    assert parent["workbench.ray_workers"] == "2" and note in parent["workbench.ray_note"]
    assert len({r.tags[WORKER_TAG] for r in Tracker(tracking_uri).records("capped")}) == 2

    with pytest.raises(UserInputError, match=r"needs 1 CPU and 1 GPU\(s\), and the Ray cluster has "
                                             r"2 CPU\(s\) and 0 GPU\(s\) in all, so no worker fits"):
        run_experiment(fake_spec("no-gpu", 1), tracking_uri=tracking_uri, progress=False,
                       grids_dir=tmp_path / "g", ray=RayOptions(gpus_per_worker=1))


@ray.remote(num_cpus=1)
class CpuHolder:
    """Another Ray job's actor, holding one CPU for as long as it lives."""

    def ping(self) -> bool:
        return True


def test_a_worker_that_cannot_start_is_given_up_and_its_batches_run_elsewhere(ray_cluster, tracking_uri: str,
                                                                              tmp_path: Path, capfd) -> None:
    holders = [CpuHolder.remote()]
    ray.get(holders[0].ping.remote())  # one of the 2 CPUs is taken: the second worker waits for it
    try:
        summary = run_experiment(fake_spec("one-slot", 4), tracking_uri=tracking_uri, progress=False,
                                 grids_dir=tmp_path / "g", ray=RayOptions(workers=2, start_timeout_s=20))
        assert summary.ok and summary.finished == 4, summary.stopped
        assert "1 Ray worker(s) did not start within 20 s" in capfd.readouterr().err
        keys = finished_keys(tracking_uri, "one-slot")
        assert len(keys) == 4 and set(keys.values()) == {1}  # the batches it held ran once, on the other
        assert len({r.tags[WORKER_TAG] for r in Tracker(tracking_uri).records("one-slot")}) == 1

        holders.append(CpuHolder.remote())
        ray.get(holders[1].ping.remote())  # both CPUs taken: no worker can start at all
        with pytest.raises(WorkbenchError, match=r"no Ray worker started within 3 s \(each needs 1 CPU; free "
                                                 r"now: 0 CPU\(s\)"):
            run_experiment(fake_spec("no-slot", 2), tracking_uri=tracking_uri, progress=False,
                           grids_dir=tmp_path / "g", ray=RayOptions(workers=1, start_timeout_s=3))
    finally:
        for holder in holders:
            ray.kill(holder)


def test_runs_a_dead_worker_completed_are_not_generated_again(tracking_uri: str) -> None:
    """What a dead worker already logged, FAILED and BLOCKED included, counts; the rest is queued again."""
    tracker = Tracker(tracking_uri)
    plan = make_plan(fake_spec("reaped", 6), tracker=tracker)
    experiment_id = tracker.experiment_id("reaped")
    parent = tracker.start_parent(experiment_id, name="reaped", tags={}, params={}, texts={})
    finished, failed, blocked, running, broken, missing = plan.requests
    tracker.log_image_run(experiment_id, parent, GeneratedImage(request=finished, image=fake_image(finished)))
    tracker.log_image_run(experiment_id, parent, GenerationFailure(request=failed, reason="RuntimeError: x"))
    tracker.log_image_run(experiment_id, parent, GenerationFailure(request=blocked, reason="nsfw",
                                                                   status="BLOCKED"))
    for request, status in ((running, None), (broken, "FAILED")):  # cut off mid-write; logging broke
        run = tracker.client.create_run(experiment_id, tags={
            "workbench.kind": "image", "workbench.run_key": request.run_key, "workbench.outcome": "FINISHED",
            "mlflow.parentRunId": parent})
        if status:
            tracker.client.set_terminated(run.info.run_id, status)
    summary = RunSummary(experiment="reaped", experiment_id=experiment_id, parent_run_id=parent,
                         tracking_uri=tracking_uri, planned=6, skipped=0)
    logger = BackgroundLogger(tracker, experiment_id, parent, experiment="reaped")
    ctx = ExecutionContext(plan=plan, tracker=tracker, experiment_id=experiment_id, parent_run_id=parent,
                           summary=summary, retry=RetryPolicy(),
                           progress=ProgressBar(6, enabled=False, description="reaped"), logger=logger)
    driver = _Driver(ctx, RayOptions(), ray)
    dead = _Slot(actor=None, dead=True)  # its death is already known: no replacement is started
    driver._worker_died(_Job(list(plan.requests), slot=dead), RuntimeError("The actor died unexpectedly"))
    assert logger.close() == []  # what the dead worker left is counted, not logged again

    assert (summary.finished, summary.failed, summary.blocked) == (1, 1, 1)
    by_key = {entry.run_key: entry for entry in summary.logged_runs}  # what RunSummary.runs is made from
    assert {k: by_key[k].status for k in by_key} == {finished.run_key: "FINISHED", failed.run_key: "FAILED",
                                                     blocked.run_key: "BLOCKED"}
    assert all(entry.run_id for entry in by_key.values()) and by_key[failed.run_key].reason == "RuntimeError: x"
    assert [[r.run_key for r in job.batch] for job in driver.queue] == \
        [[running.run_key, broken.run_key, missing.run_key]]
    assert driver.queue[0].deaths == 1
    statuses = {r.run_key: r.status for r in tracker.records("reaped")}
    assert statuses[running.run_key] == "KILLED" and statuses[failed.run_key] == "FAILED"


def test_require_ray_turns_a_missing_ray_into_a_failure(tmp_path: Path) -> None:
    hidden = tmp_path / "no-ray" / "ray"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('ray hidden by the test')\n")
    path = os.pathsep.join([str(hidden.parent), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-rs", "-p", "no:cacheprovider",
               str(Path(__file__))]
    skipped = subprocess.run(command, cwd=ROOT, env={**env, "WORKBENCH_REQUIRE_RAY": ""}, capture_output=True,
                             text=True, timeout=300)
    assert skipped.returncode == 5, skipped.stdout + skipped.stderr  # 5: nothing collected: module skipped
    assert "ray is not installed (ray hidden by the test)" in skipped.stdout
    required = subprocess.run(command, cwd=ROOT, env={**env, "WORKBENCH_REQUIRE_RAY": "1"},
                              capture_output=True, text=True, timeout=300)
    assert required.returncode not in (0, 5), required.stdout + required.stderr
    assert "WORKBENCH_REQUIRE_RAY=1 but ray cannot be imported (ray hidden by the test)" in required.stdout


def test_the_kuberay_example_names_the_pinned_ray_and_a_gpu_worker_group() -> None:
    """deploy/ray-cluster.yaml was never applied here: check what can be checked without a cluster."""
    import tomllib

    import yaml

    cluster, volume = yaml.safe_load_all((ROOT / "deploy" / "ray-cluster.yaml").read_text())
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["ray"]
    assert pins == [f"ray=={ray.__version__}"] and cluster["spec"]["rayVersion"] == ray.__version__
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    head = cluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # workers land on GPU pods only
    (group,) = cluster["spec"]["workerGroupSpecs"]
    pods = [head["template"]["spec"], group["template"]["spec"]]
    for pod in pods:
        (container,) = pod["containers"]
        assert container["image"].endswith(f":{ray.__version__}-gpu")
        assert {e["name"] for e in container["env"]} >= {"MLFLOW_TRACKING_URI", "HF_HOME"}
        claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
                  if "persistentVolumeClaim" in v}
        assert claims == {volume["metadata"]["name"]}
    (worker,) = group["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    dockerfile = (ROOT / "deploy" / "ray-image.Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-py311-gpu" in dockerfile
