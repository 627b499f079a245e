"""MLflow tracking through ``MlflowClient`` with explicit run ids (no fluent globals).

One parent run per ``workbench run`` (spec, plan, grids); one child run per image (params, tags,
metrics, the PNG with embedded metadata, the request JSON, the prompts). Image runs are written by
``BackgroundLogger`` worker threads so generation never waits for PNG encoding or store I/O. A child
run is FINISHED only after its artifacts landed, so a crash never leaves a "done" run without its image.
"""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import default_artifact_root, is_local_sqlite, public_uri, resolve_tracking_uri
from .errors import TrackingError
from .provenance.a1111 import a1111_parameters
from .provenance.png import encode_png, text_chunks, workbench_metadata
from .types import GeneratedImage, GenerationFailure, GenerationRequest, GenerationResult, RunRecord

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient
    from PIL import Image

__all__ = ["Tracker", "BackgroundLogger", "LoggedRun", "IMAGE_ARTIFACT", "request_params"]

IMAGE_ARTIFACT = "image.png"
KIND_TAG = "workbench.kind"
RUN_KEY_TAG = "workbench.run_key"
MAX_PARAM = 6000  # MLflow's cap on a param value
# MLflow 3's UI opens experiments without this tag in its GenAI (traces) view; ours are runs to compare.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


def request_params(request: GenerationRequest) -> dict[str, str]:
    """The MLflow params of an image run: every generation parameter, flat (``var.NAME``...)."""
    values = request.factor_values()
    values["seed"] = request.seed if request.seed is not None else "not controlled"
    values["scheduler"] = request.scheduler or "default"
    values["template_version"] = request.template_version
    values["model_hash"] = request.model_hash
    values["run_key"] = request.run_key
    out: dict[str, str] = {}
    for key, value in values.items():
        if value is None:
            continue
        text = str(value)
        if len(text) > MAX_PARAM:  # the full text is in prompt.txt / request.json
            text = text[:MAX_PARAM - 40] + f"… [{len(text)} chars, see artifacts]"
        out[key] = text
    return out


BACKEND_ID_TAG = "workbench.id."  # + request_id, prediction_id, model_version...: what the backend called it


def _status_tags(result: GenerationResult) -> dict[str, str]:
    # The backend's own ids on every outcome: a blocked or failed call is the one a support ticket asks about.
    ids = {BACKEND_ID_TAG + re.sub(r"[^\w.-]", "_", str(k))[:200]: str(v)[:5000]
           for k, v in result.backend_ids.items() if v not in (None, "")}
    if isinstance(result, GenerationFailure):
        return {"workbench.outcome": result.status, "workbench.status_reason": result.reason[:7000],
                "workbench.error_type": result.error_type, **ids}
    tags = {"workbench.outcome": "FINISHED", **ids}
    if result.flags:
        tags["workbench.flags"] = ",".join(sorted(result.flags))
        tags["workbench.status_reason"] = "; ".join(
            f"{k}: {v}" for k, v in sorted(result.notes.items()) if k in result.flags)[:7000]
    return tags


def _run_name(result: GenerationResult) -> str:
    r = result.request
    cell = f"{r.factor}={r.level}" if r.factor else "base"
    rep = f"seed {r.seed}" if r.seed is not None else f"replicate {r.replicate + 1}"
    return f"{cell} · {rep}"[:250]


def _fast_sqlite(client: MlflowClient) -> None:
    """WAL journal and ``synchronous=NORMAL`` for a local SQLite store: 55 → 35 ms per image run.

    Measured here (benchmarks/, docs/benchmarks.md). WAL stays consistent after a crash and lets readers
    (the UI, a second sweep) work while a sweep writes; NORMAL may lose the last commits on power loss,
    never corrupt the store, and keeps their order (a run is FINISHED only after its artifacts).
    Reaches into MLflow's store for its engine; if that ever changes, the defaults simply stay.
    """
    try:
        from sqlalchemy import event

        engine = client._tracking_client.store.engine  # noqa: SLF001
    except Exception:
        return

    def pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", pragmas)
    engine.dispose()  # pooled connections were opened before the listener: reopen them with it


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class LoggedRun:
    run_key: str
    run_id: str | None
    outcome: str
    error: str | None = None


class Tracker:
    """The MLflow store of one tracking URI (default: the embedded SQLite store)."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        self.uri = resolve_tracking_uri(tracking_uri)
        self._client: MlflowClient | None = None
        self._lock = threading.RLock()  # reentrant: experiment_id holds it while the client may be made

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            with self._lock:  # logging threads may be the first to ask: one client, made once
                if self._client is None:
                    self._client = self._connect()
        return self._client

    def _connect(self) -> MlflowClient:
        import logging

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        # MLflow's defaults (7 retries, 120 s timeout) stall a sweep for many minutes on a dead server;
        # our own writer retries and then spools, so keep these short unless the user set them.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        # Against a server, set_terminated prints "View run ... at" per image (and spends a runs/get on it).
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        from mlflow.tracking import MlflowClient

        # "Creating initial MLflow database tables..." and friends are noise in a CLI.
        logging.getLogger("mlflow").setLevel(logging.WARNING)

        if is_local_sqlite(self.uri):
            Path(self.uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        client = MlflowClient(tracking_uri=self.uri)
        if is_local_sqlite(self.uri):
            _fast_sqlite(client)
        # What log_image_run imports, imported here, on one thread: two logging threads importing
        # mlflow.entities at once can see it half-initialised ("cannot import name 'EvaluationDataset'").
        import mlflow.entities  # noqa: F401
        import mlflow.store.artifact.artifact_repository_registry  # noqa: F401

        return client

    @property
    def display_uri(self) -> str:
        return public_uri(self.uri) or self.uri

    def check(self, timeout_s: float = 5.0) -> None:
        """Fail fast, with a clear message, when the store cannot be reached.

        For a server, probe ``/health`` directly first: MLflow's own client retries for minutes.
        """
        if self.uri.startswith(("http://", "https://")):
            import urllib.request

            try:
                with urllib.request.urlopen(self.uri.rstrip("/") + "/health", timeout=timeout_s) as response:
                    response.read()
            except Exception as exc:
                raise TrackingError(f"cannot reach the MLflow tracking server at {self.display_uri}: "
                                    f"{type(exc).__name__}: {str(exc)[:200]}. Start the server (mlflow server "
                                    f"...), or pass --tracking-uri for another store") from None
        try:
            self.client.search_experiments(max_results=1)
        except Exception as exc:
            raise TrackingError(f"cannot reach the MLflow tracking store at {self.display_uri}: "
                                f"{type(exc).__name__}: {str(exc)[:300]}. Start the server, or pass "
                                f"--tracking-uri for another store") from exc

    # -- experiments ------------------------------------------------------------------------------
    def experiment_id(self, name: str, *, create: bool = True) -> str | None:
        with self._lock:
            experiment = self.client.get_experiment_by_name(name)
            if experiment is not None:
                if experiment.lifecycle_stage == "deleted":
                    raise TrackingError(f"experiment '{name}' is deleted in {self.display_uri}; restore it "
                                        f"in the MLflow UI or choose another name with --experiment")
                if create and EXPERIMENT_KIND_TAG not in experiment.tags:
                    self.client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
                return str(experiment.experiment_id)
            if not create:
                return None
            location = None
            if is_local_sqlite(self.uri):
                # Explicit and absolute: MLflow's default (./mlruns) depends on the current directory.
                root = default_artifact_root() if self.uri == resolve_tracking_uri(None) else \
                    Path(self.uri[len("sqlite:///"):]).parent / "artifacts"
                location = (root / name.replace("/", "_")).as_uri()
            try:
                return str(self.client.create_experiment(name, artifact_location=location,
                                                         tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}))
            except Exception:
                # Another process created it meanwhile.
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
                return str(experiment.experiment_id)

    # -- reading runs -----------------------------------------------------------------------------
    def records(self, experiment: str, *, kind: str = "image", statuses: Iterable[str] | None = None
                ) -> list[RunRecord]:
        """Every image run of ``experiment`` (oldest first), read back as ``RunRecord``s."""
        exp_id = self.experiment_id(experiment, create=False)
        if exp_id is None:
            return []
        query = f"tags.`{KIND_TAG}` = '{kind}'"
        wanted = set(statuses or ())
        if len(wanted) == 1:  # MLflow's filter takes IN lists for run ids only
            query += f" and attributes.status = '{next(iter(wanted))}'"
        records: list[RunRecord] = []
        token = None
        while True:
            page = self.client.search_runs([exp_id], filter_string=query, max_results=1000, page_token=token,
                                           order_by=["attributes.start_time ASC"])
            for run in page:
                if wanted and run.info.status not in wanted:
                    continue
                records.append(RunRecord(
                    run_id=run.info.run_id, status=run.info.status, run_key=run.data.tags.get(RUN_KEY_TAG, ""),
                    params=dict(run.data.params), tags=dict(run.data.tags), metrics=dict(run.data.metrics),
                    artifact_uri=run.info.artifact_uri, start_time=run.info.start_time or 0))
            token = page.token
            if not token:
                return records

    def finished_keys(self, experiment: str) -> dict[str, str]:
        """run key → run id of every FINISHED image run (what a re-run skips)."""
        return {r.run_key: r.run_id for r in self.records(experiment, statuses=["FINISHED"]) if r.run_key}

    def load_image(self, run_id: str, artifact: str = IMAGE_ARTIFACT) -> Image.Image:
        import io

        from PIL import Image

        with Image.open(io.BytesIO(self.load_bytes(run_id, artifact))) as img:
            img.load()
            return img.copy()

    def load_bytes(self, run_id: str, artifact: str) -> bytes:
        """An artifact's bytes; read in place from a local artifact store, else downloaded."""
        uri = self.client.get_run(run_id).info.artifact_uri
        if uri.startswith("file:"):
            from urllib.parse import unquote, urlparse

            path = Path(unquote(urlparse(uri).path)) / artifact
            if path.is_file():
                return path.read_bytes()
        with tempfile.TemporaryDirectory() as tmp:
            return Path(self.client.download_artifacts(run_id, artifact, tmp)).read_bytes()

    def reap_stale_runs(self, experiment_id: str) -> int:
        """Mark KILLED the runs a dead ``workbench run`` left RUNNING (same host, process gone).

        Returns how many runs were marked. Runs of live processes, or of other hosts, are left alone.
        """
        running = self.client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=5000)
        parents = {r.info.run_id: r for r in running if r.data.tags.get(KIND_TAG) == "parent"}
        dead: set[str] = set()
        host = socket.gethostname()
        for run_id, run in parents.items():
            pid = run.data.tags.get("workbench.pid", "")
            if run.data.tags.get("workbench.host") == host and pid.isdigit() and not _alive(int(pid)):
                dead.add(run_id)
        marked = 0
        for run in running:
            parent = run.data.tags.get("mlflow.parentRunId")
            is_dead_parent = run.info.run_id in dead
            orphan = parent is not None and (parent in dead or (parent not in parents and self._ended(parent)))
            if is_dead_parent or orphan:
                reason = ("the workbench process writing this run died before it finished (killed or crashed); "
                          "the next `workbench run` regenerates what is missing")
                self.client.set_tag(run.info.run_id, "workbench.status_reason", reason)
                self.client.set_tag(run.info.run_id, "workbench.outcome", "KILLED")
                self.client.set_terminated(run.info.run_id, "KILLED")
                marked += 1
        return marked

    def _ended(self, run_id: str) -> bool:
        try:
            return self.client.get_run(run_id).info.status != "RUNNING"
        except Exception:
            return True

    # -- writing runs -----------------------------------------------------------------------------
    def start_parent(self, experiment_id: str, *, name: str, tags: Mapping[str, str],
                     params: Mapping[str, Any], texts: Mapping[str, str]) -> str:
        from mlflow.entities import Param, RunTag

        run = self.client.create_run(experiment_id, run_name=name, tags={
            KIND_TAG: "parent", "workbench.pid": str(os.getpid()), "workbench.host": socket.gethostname(), **tags})
        run_id = run.info.run_id
        self.client.log_batch(run_id, params=[Param(k, str(v)[:MAX_PARAM]) for k, v in params.items()],
                              tags=[RunTag("workbench.started", time.strftime("%Y-%m-%d %H:%M:%S"))])
        for artifact, text in texts.items():
            self.client.log_text(run_id, text, artifact)
        return run_id

    def log_text(self, run_id: str, text: str, artifact: str) -> None:
        self.client.log_text(run_id, text, artifact)

    def log_file(self, run_id: str, path: Path, artifact_dir: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_dir)

    def log_png(self, run_id: str, image: Image.Image, artifact: str) -> None:
        """Log an in-memory image as ``artifact`` (e.g. ``grids/grid-seed.png``) from a private temp file."""
        folder, _, name = artifact.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            image.save(path, format="PNG", pnginfo=text_chunks(image))
            self.client.log_artifact(run_id, str(path), folder or None)

    def end_run(self, run_id: str, status: str = "FINISHED", tags: Mapping[str, str] | None = None) -> None:
        from mlflow.entities import RunTag

        if tags:  # one transaction, not one per tag
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        self.client.set_terminated(run_id, status)

    def log_image_run(self, experiment_id: str, parent_run_id: str | None, result: GenerationResult,
                      *, extra_tags: Mapping[str, str] | None = None) -> str:
        """Write one image run completely (params, tags, metrics, artifacts), then terminate it."""
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        request = result.request
        tags = {KIND_TAG: "image", RUN_KEY_TAG: request.run_key, "workbench.backend": request.backend,
                "workbench.model": request.model, "workbench.spec": request.experiment or "",
                "workbench.factor": request.factor or "base",
                "workbench.level": "" if request.level is None else str(request.level),
                **_status_tags(result), **(extra_tags or {})}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        if result.environment.get("batch_id"):
            tags["workbench.batch_id"] = str(result.environment["batch_id"])
        run = self.client.create_run(experiment_id, run_name=_run_name(result), tags=tags)
        run_id = run.info.run_id
        try:
            metrics = {"latency_s": result.latency_s, **result.metrics}
            if result.cost_usd is not None:
                metrics["cost_usd"] = result.cost_usd
            if isinstance(result, GeneratedImage):
                pixels = np.asarray(result.image.convert("L"), dtype=np.float32)
                metrics.update({"image_mean": float(pixels.mean()), "image_std": float(pixels.std()),
                                "batch_size": result.batch_size, "batch_index": result.batch_index})
                if result.revised_prompt is not None:  # how far the backend rewrote the prompt, sortable
                    from .prompts.diff import diff_prompts

                    metrics["prompt_drift"] = diff_prompts(request.prompt, result.revised_prompt).drift
            now = int(time.time() * 1000)
            self.client.log_batch(
                run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                params=[Param(k, v) for k, v in request_params(request).items()],
                tags=[RunTag("workbench.run_id", run_id)])
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                self._write_artifacts(folder, result, run_id, experiment_id)
                # The repository from the run we just created: client.log_artifacts would fetch the run
                # again to learn its artifact URI, one more round trip per image on a remote server.
                get_artifact_repository(run.info.artifact_uri, tracking_uri=self.uri).log_artifacts(str(folder))
            self.client.set_terminated(run_id, "FINISHED" if isinstance(result, GeneratedImage) else "FAILED")
        except BaseException:
            try:
                self.client.set_terminated(run_id, "FAILED")
                self.client.set_tag(run_id, "workbench.status_reason", "logging failed before the run was complete")
            finally:
                raise
        return run_id

    def _write_artifacts(self, folder: Path, result: GenerationResult, run_id: str, experiment_id: str) -> None:
        request = result.request
        (folder / "request.json").write_text(json.dumps(request.to_dict(), indent=2, ensure_ascii=False))
        (folder / "prompt.txt").write_text(request.prompt + "\n")
        if request.negative_prompt:
            (folder / "negative_prompt.txt").write_text(request.negative_prompt + "\n")
        (folder / "environment.json").write_text(json.dumps(dict(result.environment), indent=2, default=str))
        for name, note in result.notes.items():  # backend logs, truncation details...
            safe = re.sub(r"[^\w.-]", "_", str(name)).strip(".")[:64] or "note"  # never a path
            (folder / "notes").mkdir(exist_ok=True)
            (folder / "notes" / f"{safe}.txt").write_text(str(note) + "\n")
        if isinstance(result, GenerationFailure):
            (folder / "failure.txt").write_text(f"{result.status}: {result.reason}\n")
            return
        meta = workbench_metadata(result, run_id=run_id, tracking_uri=self.uri, experiment_id=experiment_id)
        (folder / IMAGE_ARTIFACT).write_bytes(encode_png(
            result.image, parameters=a1111_parameters(request), workbench=meta))
        if result.revised_prompt is not None:
            from .prompts.diff import diff_prompts

            (folder / "revised_prompt.txt").write_text(result.revised_prompt + "\n")
            (folder / "prompt_diff.txt").write_text(diff_prompts(request.prompt, result.revised_prompt).to_text())
        if result.original_bytes is not None and result.original_format not in (None, "png"):
            (folder / f"original.{result.original_format}").write_bytes(result.original_bytes)


@dataclass
class BackgroundLogger:
    """Logs image runs on worker threads; ``submit`` blocks only when ``max_pending`` are queued.

    Bounded, so memory stays flat however fast the generator is; ``close()`` waits until every
    submitted result is written and returns what happened to each.
    """

    tracker: Tracker
    experiment_id: str
    parent_run_id: str | None
    workers: int = 2
    max_pending: int = 32
    extra_tags: Mapping[str, str] = field(default_factory=dict)
    experiment: str = ""
    on_logged: Any = None  # callable(LoggedRun), called from worker threads

    def __post_init__(self) -> None:
        self._queue: queue.Queue[GenerationResult | None] = queue.Queue(maxsize=self.max_pending)
        self._done: list[LoggedRun] = []
        self._lock = threading.Lock()
        self.store_failed = threading.Event()  # set when a write failed for good: the runner stops
        self._threads = [threading.Thread(target=self._work, name=f"workbench-log-{i}", daemon=True)
                         for i in range(self.workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, result: GenerationResult) -> None:
        self._queue.put(result)

    def _work(self) -> None:
        while True:
            result = self._queue.get()
            if result is None:
                return
            outcome = result.status
            try:
                if self.store_failed.is_set():  # the store is gone: don't spend retries on every image
                    raise TrackingError("the store already failed during this run")
                run_id = self._log_with_retry(result)
                logged = LoggedRun(result.request.run_key, run_id, outcome)
            except Exception as exc:  # the store is gone: keep the image in the local spool
                from .spool import spool_result

                self.store_failed.set()
                error = f"{type(exc).__name__}: {str(exc)[:300]}"
                try:
                    where = spool_result(result, tracking_uri=self.tracker.uri, experiment=self.experiment,
                                         parent_run_id=self.parent_run_id)
                    logged = LoggedRun(result.request.run_key, None, "SPOOLED", f"{error}; saved in {where}")
                except Exception as spool_exc:
                    logged = LoggedRun(result.request.run_key, None, "LOG_FAILED", f"{error}; spool: {spool_exc}")
            with self._lock:
                self._done.append(logged)
            if self.on_logged:
                self.on_logged(logged)

    def _log_with_retry(self, result: GenerationResult, attempts: int = 3) -> str:
        for attempt in range(attempts):
            try:
                return self.tracker.log_image_run(self.experiment_id, self.parent_run_id, result,
                                                  extra_tags=self.extra_tags)
            except Exception:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def close(self) -> list[LoggedRun]:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        return list(self._done)
