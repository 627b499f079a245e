"""The orchestrator against a real MLflow store, with the in-process fake backend."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from workbench.backends import registry
from workbench.backends.base import Backend, Capabilities
from workbench.backends.fake import fake_image
from workbench.errors import AuthenticationError, OutOfMemoryError, RateLimitError, TransientBackendError
from workbench.experiments.spec import parse_spec
from workbench.run.batch import RetryPolicy
from workbench.run.runner import run_experiment
from workbench.tracking.store import Tracker
from workbench.types import GeneratedImage, GenerationFailure, GenerationRequest, GenerationResult

FAST_RETRY = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.05)


def make_spec(**changes):  # type: ignore[no-untyped-def]
    data = {"name": "sweep", "prompt": "a {{ colour }} circle", "variables": {"colour": "red"},
            "backend": "fake", "model": "m", "params": {"width": 32, "height": 32, "steps": 4, "guidance": 5},
            "seeds": [1, 2], "vary": {"guidance": [2, 9], "var.colour": ["blue"]}}
    data.update(changes)
    return parse_spec(data)


class ScriptedBackend(Backend):
    """Fails the way it is told to: per prompt word, or for the first N calls."""

    name = "scripted"

    def __init__(self) -> None:
        self.calls = 0
        self.fail_first: list[Exception] = []
        self.fatal_after: int | None = None

    def capabilities(self, model: str) -> Capabilities:
        return Capabilities(seeds=True, max_batch=1)

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.calls += 1
        if self.fail_first:
            raise self.fail_first.pop(0)
        if self.fatal_after is not None and self.calls > self.fatal_after:
            raise AuthenticationError("key revoked")
        out: list[GenerationResult] = []
        for r in batch:
            if "blue" in r.prompt:
                out.append(GenerationFailure(r, "moderation_blocked: the prompt was refused", status="BLOCKED"))
            elif r.guidance == 9:
                raise ValueError("a bug in the backend")
            else:
                out.append(GeneratedImage(request=r, image=fake_image(r)))
        return out


@pytest.fixture
def scripted():  # type: ignore[no-untyped-def]
    backend = ScriptedBackend()
    registry._instances["scripted"] = backend
    registry.register_backend("scripted", ScriptedBackend)
    registry._instances["scripted"] = backend
    yield backend
    registry._registered.pop("scripted", None)
    registry._instances.pop("scripted", None)


def test_run_logs_every_image_with_params_tags_artifacts(tracking_uri: str, fake_backend, tmp_path: Path) -> None:
    summary = run_experiment(make_spec(), tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path)
    assert (summary.planned, summary.finished, summary.skipped, summary.failed) == (8, 8, 0, 0)
    assert summary.ok
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("sweep")
    runs = client.search_runs([experiment.experiment_id], "tags.`workbench.kind` = 'image'")
    assert len(runs) == 8 and {r.info.status for r in runs} == {"FINISHED"}
    blue = [r for r in runs if r.data.params["var.colour"] == "blue"]
    assert len(blue) == 2
    run = blue[0]
    assert run.data.params["prompt"] == "a blue circle"
    assert run.data.params["guidance"] == "5.0" and run.data.params["size"] == "32x32"
    assert run.data.tags["workbench.factor"] == "var.colour" and run.data.tags["workbench.level"] == "blue"
    assert run.data.tags["mlflow.parentRunId"] == summary.parent_run_id
    assert "latency_s" in run.data.metrics and "image.brightness" in run.data.metrics
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"image.png", "request.json", "prompt.txt", "environment.json"} <= names
    # the PNG carries both metadata chunks, and its workbench chunk names this run
    image = Image.open(Tracker(tracking_uri).client.download_artifacts(run.info.run_id, "image.png", str(tmp_path)))
    meta = json.loads(image.info["workbench"])
    assert meta["run_id"] == run.info.run_id and meta["run_key"] == run.data.tags["workbench.run_key"]
    # the image statistics (workbench/evaluate/image_stats.py) are those of the logged PNG
    luma = np.asarray(image.convert("RGB"), dtype=np.float64) @ np.array([0.299, 0.587, 0.114])
    assert run.data.metrics["image.brightness"] == pytest.approx(luma.mean() / 255)
    assert run.data.metrics["image.contrast"] == pytest.approx(luma.std() / 255)
    assert run.data.metrics["image.blank"] == 0.0 and "adherence.overall" not in run.data.metrics
    assert image.info["parameters"].startswith("a blue circle\n")
    assert "Seed: " in image.info["parameters"] and "CFG scale: 5.0" in image.info["parameters"]
    # the parent run holds the spec, the plan, the summary and the grids
    parent = {a.path for a in client.list_artifacts(summary.parent_run_id)}
    assert {"spec.yaml", "plan.json", "summary.json", "grids"} <= parent
    assert client.get_run(summary.parent_run_id).info.status == "FINISHED"
    assert sorted(p.name for p in summary.grids) == ["grid-guidance.png", "grid-var.colour.png"]
    assert all(p.is_file() and p.parent == tmp_path for p in summary.grids)


def test_rerun_skips_what_is_finished(tracking_uri: str, fake_backend, tmp_path: Path) -> None:
    run_experiment(make_spec(), tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path)
    calls = len(fake_backend.calls)
    again = run_experiment(make_spec(), tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path)
    assert (again.skipped, again.finished) == (8, 0)
    assert len(fake_backend.calls) == calls  # nothing generated
    bigger = run_experiment(make_spec(seeds=[1, 2, 3]), tracking_uri=tracking_uri, progress=False,
                            grids_dir=tmp_path)
    assert (bigger.skipped, bigger.finished) == (8, 4)
    runs = Tracker(tracking_uri).records("sweep")
    assert len(runs) == 12 and len({r.run_key for r in runs}) == 12  # never duplicated


def test_batches_share_calls(tracking_uri: str, fake_backend, tmp_path: Path) -> None:
    run_experiment(make_spec(seeds=[1, 2, 3, 4, 5]), tracking_uri=tracking_uri, progress=False,
                   grids_dir=tmp_path, max_batch=4)
    # guidance changes the batch key; colour (a prompt change) and seeds share calls:
    # base+blue = 10 requests → 4, 4, 2; guidance 2 → 4, 1; guidance 9 → 4, 1
    assert sorted(fake_backend.calls, reverse=True) == [4, 4, 4, 4, 2, 1, 1]


def test_failures_are_isolated_and_logged(tracking_uri: str, scripted: ScriptedBackend, tmp_path: Path) -> None:
    summary = run_experiment(make_spec(backend="scripted"), tracking_uri=tracking_uri, progress=False,
                             grids_dir=tmp_path, retry=FAST_RETRY)
    assert (summary.finished, summary.failed, summary.blocked) == (4, 2, 2)
    records = {(r.params["guidance"], r.params["var.colour"], r.params["seed"]): r
               for r in Tracker(tracking_uri).records("sweep")}
    crashed = records[("9.0", "red", "1")]
    assert crashed.status == "FAILED" and "ValueError: a bug in the backend" in crashed.reason
    blocked = records[("5.0", "blue", "1")]
    assert blocked.status == "FAILED" and blocked.outcome == "BLOCKED" and "moderation_blocked" in blocked.reason
    # failed runs are tried again on the next run; finished ones are not
    scripted.calls = 0
    again = run_experiment(make_spec(backend="scripted"), tracking_uri=tracking_uri, progress=False,
                           grids_dir=tmp_path, retry=FAST_RETRY)
    assert again.skipped == 4 and scripted.calls == 4


def test_retryable_errors_are_retried_with_retry_after(tracking_uri: str, scripted: ScriptedBackend,
                                                      tmp_path: Path) -> None:
    scripted.fail_first = [RateLimitError("429", retry_after=0.01), TransientBackendError("502 bad gateway")]
    summary = run_experiment(make_spec(backend="scripted", vary={}, seeds=[1]), tracking_uri=tracking_uri,
                             progress=False, grids_dir=tmp_path, retry=FAST_RETRY)
    assert (summary.finished, summary.retries) == (1, 2)


def test_a_retry_after_longer_than_the_policy_waits_fails_those_runs(tracking_uri: str, scripted: ScriptedBackend,
                                                                     tmp_path: Path) -> None:
    scripted.fail_first = [RateLimitError("429 slow down", retry_after=120, request_id="req_123")]
    summary = run_experiment(make_spec(backend="scripted", vary={}, seeds=[1, 2]), tracking_uri=tracking_uri,
                             progress=False, grids_dir=tmp_path, retry=FAST_RETRY)
    assert (summary.finished, summary.failed, summary.retries) == (1, 1, 0)  # no early retry; the sweep goes on
    (failed,) = Tracker(tracking_uri).records("sweep", statuses=["FAILED"])
    assert "the server asked to wait 120 s before retrying" in failed.reason and "run the spec again" in failed.reason
    assert failed.tags["workbench.id.request_id"] == "req_123"  # the server's id of the refused call


def test_an_unexpected_error_fails_the_parent_run_and_keeps_finished_work(
        tracking_uri: str, fake_backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.run.context import RunSummary

    counted: list[str] = []

    def count_then_crash(summary, status):  # type: ignore[no-untyped-def]
        counted.append(status)
        if len(counted) == 3:
            raise RuntimeError("a bug in the orchestration")
        summary.finished += 1

    monkeypatch.setattr(RunSummary, "count", count_then_crash)
    with pytest.raises(RuntimeError, match="a bug in the orchestration"):
        run_experiment(make_spec(vary={}, seeds=[1, 2, 3, 4], max_batch=1), tracking_uri=tracking_uri,
                       progress=False, grids_dir=tmp_path)
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("sweep").experiment_id
    (parent,) = client.search_runs([experiment], "tags.`workbench.kind` = 'parent'")
    assert parent.info.status == "FAILED"
    assert "unexpected RuntimeError: a bug in the orchestration" in parent.data.tags["workbench.status_reason"]
    assert len(Tracker(tracking_uri).records("sweep", statuses=["FINISHED"])) == 2


def test_retries_are_bounded(tracking_uri: str, scripted: ScriptedBackend, tmp_path: Path) -> None:
    scripted.fail_first = [TransientBackendError("503")] * 5
    summary = run_experiment(make_spec(backend="scripted", vary={}, seeds=[1]), tracking_uri=tracking_uri,
                             progress=False, grids_dir=tmp_path, retry=FAST_RETRY)
    assert (summary.finished, summary.failed) == (0, 1)
    (record,) = Tracker(tracking_uri).records("sweep")
    assert "after 3 attempts" in record.reason


def test_a_fatal_error_stops_the_sweep_and_keeps_finished_work(tracking_uri: str, scripted: ScriptedBackend,
                                                               tmp_path: Path) -> None:
    scripted.fatal_after = 2
    summary = run_experiment(make_spec(backend="scripted", vary={}, seeds=[1, 2, 3, 4]), tracking_uri=tracking_uri,
                             progress=False, grids_dir=tmp_path, retry=FAST_RETRY)
    assert summary.finished == 2 and summary.not_run == 2
    assert summary.stopped and "key revoked" in summary.stopped
    client = MlflowClient(tracking_uri)
    assert client.get_run(summary.parent_run_id).info.status == "FAILED"
    assert len(Tracker(tracking_uri).records("sweep", statuses=["FINISHED"])) == 2


def test_experiment_name_override(tracking_uri: str, fake_backend, tmp_path: Path) -> None:
    summary = run_experiment(make_spec(vary={}), tracking_uri=tracking_uri, experiment="elsewhere",
                             progress=False, grids_dir=tmp_path)
    assert summary.experiment == "elsewhere"
    assert len(Tracker(tracking_uri).records("elsewhere")) == 2


def test_artifacts_live_next_to_the_store_not_the_cwd(tracking_uri: str, fake_backend, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run_experiment(make_spec(vary={}), tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path / "g")
    assert list(elsewhere.iterdir()) == []
    experiment = MlflowClient(tracking_uri).get_experiment_by_name("sweep")
    store_dir = Path(tracking_uri[len("sqlite:///"):]).parent
    assert experiment.artifact_location.startswith((store_dir / "artifacts").as_uri())


class SmallDevice(Backend):
    """Runs out of memory for batches larger than ``fits``, like a GPU would."""

    name = "small"

    def __init__(self, fits: int = 2) -> None:
        self.fits = fits
        self.calls: list[int] = []

    def capabilities(self, model: str) -> Capabilities:
        return Capabilities(seeds=True, max_batch=8)

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.calls.append(len(batch))
        if len(batch) > self.fits:
            raise OutOfMemoryError(f"CUDA out of memory for a batch of {len(batch)}")
        return [GeneratedImage(request=r, image=fake_image(r), batch_size=len(batch), batch_index=i)
                for i, r in enumerate(batch)]


def test_out_of_memory_halves_the_batch_and_goes_on(tracking_uri: str, tmp_path: Path) -> None:
    device = SmallDevice(fits=2)
    registry.register_backend("small", SmallDevice)
    registry._instances["small"] = device
    try:
        summary = run_experiment(make_spec(backend="small", vary={}, seeds=[1, 2, 3, 4, 5, 6, 7]),
                                 tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path, retry=FAST_RETRY)
    finally:
        registry._registered.pop("small", None)
        registry._instances.pop("small", None)
    assert (summary.finished, summary.failed) == (7, 0)
    assert device.calls == [7, 4, 2, 2, 3, 2, 1] and summary.oom_splits == 3
    records = Tracker(tracking_uri).records("sweep")
    assert {r.metrics["batch_size"] for r in records} == {1.0, 2.0}


def test_out_of_memory_at_batch_1_fails_the_run(tracking_uri: str, tmp_path: Path) -> None:
    registry.register_backend("small", SmallDevice)
    registry._instances["small"] = SmallDevice(fits=0)
    try:
        summary = run_experiment(make_spec(backend="small", vary={}, seeds=[1, 2]), tracking_uri=tracking_uri,
                                 progress=False, grids_dir=tmp_path, retry=FAST_RETRY)
    finally:
        registry._registered.pop("small", None)
        registry._instances.pop("small", None)
    assert summary.failed == 2 and not summary.stopped
    assert all("even a batch of 1" in r.reason for r in Tracker(tracking_uri).records("sweep"))


def test_grid_over_templates_keeps_each_templates_negative_prompt(tracking_uri: str, fake_backend,
                                                                  tmp_path: Path) -> None:
    spec = parse_spec({"name": "templates", "template": "photoreal", "variables": {"subject": "a fox"},
                       "backend": "fake", "model": "m", "params": {"width": 32, "height": 32}, "seeds": [1, 2],
                       "vary": {"template": ["concept_art", "product"], "guidance": [3.0]}})
    summary = run_experiment(spec, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path)
    from workbench.grids.pivot import pivot_records

    data, chosen = pivot_records(Tracker(tracking_uri).records("templates"), "seed", "template")
    assert data.col_levels == ["photoreal", "concept_art", "product"]  # none hidden by its negative prompt
    assert len([c for c in data.cells.values() if c.status == "FINISHED"]) == 6
    assert data.fixed.get("guidance") == "7.0" and "negative_prompt" not in data.fixed
    assert summary.grids and all(p.is_file() for p in summary.grids)


def test_experiments_open_in_the_runs_view_of_the_mlflow_ui(tracking_uri: str, fake_backend, tmp_path: Path) -> None:
    run_experiment(make_spec(vary={}), tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path)
    experiment = MlflowClient(tracking_uri).get_experiment_by_name("sweep")
    # without it MLflow 3's UI shows the experiment as a GenAI (traces) project
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_grid_writers_never_collide_on_one_path(tmp_path: Path) -> None:
    """Concurrent sweeps write grids of the same name: each writer has its own temp file, the last one wins."""
    import threading

    from workbench.grids.render import save_png_atomic

    target = tmp_path / "grids" / "grid-seed.png"
    errors: list[BaseException] = []

    def write(colour: str) -> None:
        try:
            for _ in range(40):
                save_png_atomic(Image.new("RGB", (64, 64), colour), target)
        except BaseException as exc:  # reported below, with the colour that failed
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(c,)) for c in ("red", "blue")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with Image.open(target) as image:
        assert image.getpixel((0, 0)) in {(255, 0, 0), (0, 0, 255)}
    assert [p.name for p in target.parent.iterdir()] == ["grid-seed.png"]


def test_logging_runs_off_the_generating_thread(tracking_uri: str, fake_backend, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from workbench.tracking import store as tracking

    generating: set[str] = set()
    logging_on: set[str] = set()
    real_generate, real_log = fake_backend.generate, tracking.Tracker.log_image_run

    def generate(batch):  # type: ignore[no-untyped-def]
        generating.add(threading.current_thread().name)
        return real_generate(batch)

    def log_image_run(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        logging_on.add(threading.current_thread().name)
        return real_log(self, *args, **kwargs)

    monkeypatch.setattr(fake_backend, "generate", generate)
    monkeypatch.setattr(tracking.Tracker, "log_image_run", log_image_run)
    summary = run_experiment(make_spec(), tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path)
    assert summary.ok and summary.finished == 8
    assert generating == {threading.main_thread().name}
    assert logging_on and all(name.startswith("workbench-log-") for name in logging_on), logging_on


def test_a_second_sweep_in_the_process_reuses_the_loaded_pipeline(tracking_uri: str, embedded_model: Path,
                                                                 tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import diffusers

    spec = {"name": "cached", "prompt": "a red circle", "backend": "diffusers", "model": "embedded:tiny-sd",
            "params": {"width": 64, "height": 64, "steps": 2}, "seeds": [1]}
    first = run_experiment(parse_spec(spec), tracking_uri=tracking_uri, progress=False, make_grids=False)

    def no_reload(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the pipeline was loaded again")

    monkeypatch.setattr(diffusers.AutoPipelineForText2Image, "from_pretrained", no_reload)
    second = run_experiment(parse_spec({**spec, "seeds": [2], "vary": {"scheduler": ["ddim"]}}),
                            tracking_uri=tracking_uri, progress=False, make_grids=False)
    assert first.ok and second.ok and second.finished == 2  # a new seed and a scheduler swap: no reload
