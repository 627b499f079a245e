"""One MLflow tracking store, through ``MlflowClient`` with explicit run ids (no fluent globals).

One parent run per ``workbench run`` (spec, plan, grids); one child run per image (params, tags,
metrics, the PNG with embedded metadata, the request JSON, the prompts). A child run is FINISHED only
after its artifacts landed, so a crash never leaves a "done" run without its image. Every MLflow call
of the workbench goes through ``Tracker``; the names it writes are in ``schema``.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import default_artifact_root, is_local_sqlite, public_uri, resolve_tracking_uri
from ..errors import TrackingError, UnknownRunError, WorkbenchError
from ..prompts.diff import diff_prompts
from ..provenance.png import text_chunks
from ..types import GeneratedImage, GenerationResult
from . import schema
from .artifacts import write_image_artifacts
from .local_store import check_local_store, local_store_path
from .schema import RunRecord, image_tags, request_params, run_name

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient
    from PIL import Image

__all__ = ["Tracker", "lease_ttl_s"]


# Parent runs a sweep of this process is writing now (Heartbeat adds and removes them): a parent with our
# own pid that is not here was left RUNNING by an earlier sweep of this process that could not end it.
WRITING_HERE: set[str] = set()


def lease_ttl_s() -> float:
    """How long another host's run lives without a heartbeat (``$WORKBENCH_LEASE_TTL_S``, default 300 s)."""
    return float(os.environ.get("WORKBENCH_LEASE_TTL_S", "300"))


class Tracker:
    """The MLflow store of one tracking URI (default: the embedded SQLite store).

    Example:
        >>> tracker = Tracker("sqlite:////tmp/example/mlflow.db")  # doctest: +SKIP
        >>> [r.outcome for r in tracker.records("quickstart")]  # doctest: +SKIP
    """

    def __init__(self, tracking_uri: str | None = None, *, create: bool = True) -> None:
        """``create=False``: a command that only reads; a local store that does not exist is an error
        (``StoreNotFoundError``), never created."""
        self.uri = resolve_tracking_uri(tracking_uri)
        self.create = create
        self._client: MlflowClient | None = None
        self._lock = threading.RLock()  # reentrant: experiment_id holds it while the client may be made

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            with self._lock:  # logging threads may be the first to ask: one client, made once
                if self._client is None:
                    self._client = self._connect()
        return self._client

    def connect(self) -> None:
        """Connect (and import MLflow) now, on this thread, before several threads use the store."""
        self.client  # noqa: B018

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

        check_local_store(self.uri, self.display_uri, create=self.create)  # before MLflow makes or stalls on it
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

    def exists(self) -> bool:
        """False for a local store not created yet (nothing is logged there); True for any other store."""
        path = local_store_path(self.uri)
        return path is None or path.exists()

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
        except WorkbenchError:  # a local store missing or not writable: already says what and where
            raise
        except Exception as exc:
            hint = ("check that the file is an MLflow SQLite store this user can read and write"
                    if local_store_path(self.uri) else "Start the server") + ", or pass --tracking-uri for another store"
            raise TrackingError(f"cannot reach the MLflow tracking store at {self.display_uri}: "
                                f"{type(exc).__name__}: {str(exc)[:300]}. {hint}") from exc

    # -- experiments ------------------------------------------------------------------------------
    def experiment_id(self, name: str, *, create: bool = True) -> str | None:
        with self._lock:
            experiment = self.client.get_experiment_by_name(name)
            if experiment is not None:
                if experiment.lifecycle_stage == "deleted":
                    raise TrackingError(f"experiment '{name}' is deleted in {self.display_uri}; restore it "
                                        f"in the MLflow UI or choose another name with --experiment")
                if create and schema.EXPERIMENT_KIND_TAG not in experiment.tags:
                    self.client.set_experiment_tag(experiment.experiment_id, schema.EXPERIMENT_KIND_TAG,
                                                   schema.EXPERIMENT_KIND)
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
                                                         tags={schema.EXPERIMENT_KIND_TAG: schema.EXPERIMENT_KIND}))
            except Exception:
                # Another process created it meanwhile.
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
                return str(experiment.experiment_id)

    def experiment_names(self) -> list[str]:
        """Every experiment of the store (what an error about a missing one lists)."""
        return [e.name for e in self.client.search_experiments()]

    # -- reading runs -----------------------------------------------------------------------------
    def records(self, experiment: str, *, kind: str = schema.IMAGE, statuses: Iterable[str] | None = None
                ) -> list[RunRecord]:
        """Every image run of ``experiment`` (oldest first), read back as ``RunRecord``s."""
        exp_id = self.experiment_id(experiment, create=False)
        if exp_id is None:
            return []
        query = f"tags.`{schema.KIND_TAG}` = '{kind}'"
        wanted = set(statuses or ())
        if len(wanted) == 1:  # MLflow's filter takes IN lists for run ids only
            query += f" and attributes.status = '{next(iter(wanted))}'"
        return [r for r in self._search([exp_id], query, order_by=["attributes.start_time ASC"])
                if not wanted or r.status in wanted]

    def finished_keys(self, experiment: str) -> dict[str, str]:
        """run key → run id of every FINISHED image run (what a re-run skips)."""
        return {r.run_key: r.run_id for r in self.records(experiment, statuses=["FINISHED"]) if r.run_key}

    def run(self, run_id: str) -> RunRecord:
        """One run by id; ``UnknownRunError`` when the store has none."""
        from mlflow.exceptions import MlflowException

        try:
            return _record(self.client.get_run(run_id))
        except MlflowException:
            raise UnknownRunError(f"no run '{run_id}' in the MLflow store {self.display_uri}; check the id (the "
                                  f"MLflow UI shows it), or pass --tracking-uri for the store it was logged "
                                  f"to") from None

    def children(self, experiment_id: str, parent_run_id: str) -> list[RunRecord]:
        """The image runs logged under one parent run (one sweep)."""
        return [r for r in self._search([experiment_id], f"tags.`{schema.PARENT_RUN_TAG}` = '{parent_run_id}'")
                if r.kind == schema.IMAGE]

    def batch_members(self, experiment_id: str, batch_id: str) -> list[RunRecord]:
        """The image runs made by one backend call (``reproduce --exact-batch`` regenerates them together)."""
        query = f"tags.`{schema.BATCH_ID_TAG}` = '{batch_id}' and tags.`{schema.KIND_TAG}` = '{schema.IMAGE}'"
        return self._search([experiment_id], query)

    def _search(self, experiment_ids: list[str], query: str, *, order_by: list[str] | None = None
                ) -> list[RunRecord]:
        records: list[RunRecord] = []
        token = None
        while True:
            page = self.client.search_runs(experiment_ids, filter_string=query, max_results=1000, page_token=token,
                                           order_by=order_by)
            records += [_record(run) for run in page]
            token = page.token
            if not token:
                return records

    def latest_parent(self, experiment: str) -> RunRecord | None:
        """The newest parent run (one ``workbench run``) of ``experiment``, or None when it has none."""
        exp_id = self.experiment_id(experiment, create=False)
        if exp_id is None:
            return None
        query = f"tags.`{schema.KIND_TAG}` = '{schema.PARENT}'"
        page = self.client.search_runs([exp_id], filter_string=query, max_results=1,
                                       order_by=["attributes.start_time DESC"])
        return _record(page[0]) if page else None

    def load_image(self, run_id: str, artifact: str = schema.IMAGE_ARTIFACT) -> Image.Image:
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
            if not path.is_file():  # MLflow's own download would fail too, saying only "MlflowException"
                raise FileNotFoundError(f"{artifact} is missing from the artifact store (deleted, or the store "
                                        f"was moved): {path}")
            return path.read_bytes()
        with tempfile.TemporaryDirectory() as tmp:
            return Path(self.client.download_artifacts(run_id, artifact, tmp)).read_bytes()

    # -- runs left behind -------------------------------------------------------------------------
    def reap_stale_runs(self, experiment_id: str) -> int:
        """Mark KILLED the runs a dead ``workbench run`` left RUNNING (its process gone on this host, or its
        heartbeat stopped on another: ``writer_alive``).

        Returns how many runs were marked. Runs of live processes are left alone.
        """
        running = self._search([experiment_id], "attributes.status = 'RUNNING'")
        parents = {r.run_id: r for r in running if r.kind == schema.PARENT}
        dead = {run_id for run_id, run in parents.items() if not self.writer_alive(run)}
        marked = 0
        for run in running:
            parent = run.tags.get(schema.PARENT_RUN_TAG)
            is_dead_parent = run.run_id in dead
            orphan = parent is not None and (parent in dead or (parent not in parents and self._ended(parent)))
            if is_dead_parent or orphan:
                self.mark_killed(run.run_id, "the workbench process writing this run died before it finished "
                                             "(killed or crashed); the next `workbench run` regenerates what is "
                                             "missing")
                marked += 1
        return marked

    def running_parents(self, experiment_id: str) -> list[RunRecord]:
        """The parent runs of ``experiment_id`` still RUNNING (live or not: see ``writer_alive``)."""
        query = f"attributes.status = 'RUNNING' and tags.`{schema.KIND_TAG}` = '{schema.PARENT}'"
        return self._search([experiment_id], query)

    @staticmethod
    def writer_alive(run: RunRecord) -> bool:
        """Whether the process that writes parent run ``run`` may still be at work.

        On this host: its pid is alive. On another host: its heartbeat is younger than ``lease_ttl_s()``;
        a run without a heartbeat (an older workbench) counts as alive there, as before.
        """
        pid = run.tags.get(schema.PID_TAG, "")
        if run.tags.get(schema.HOST_TAG) == socket.gethostname():
            if pid == str(os.getpid()):  # this process: alive only while a sweep here still writes it
                return run.run_id in WRITING_HERE
            return not (pid.isdigit() and not _alive(int(pid)))
        beat = run.tags.get(schema.HEARTBEAT_TAG, "")
        try:
            return time.time() - float(beat) < lease_ttl_s()
        except ValueError:
            return True

    def mark_killed(self, run_id: str, reason: str) -> None:
        """End a run its writer left RUNNING (the writer died): KILLED, with the reason."""
        self.client.set_tag(run_id, schema.STATUS_REASON_TAG, reason)
        self.client.set_tag(run_id, schema.OUTCOME_TAG, "KILLED")
        self.client.set_terminated(run_id, "KILLED")

    def _ended(self, run_id: str) -> bool:
        try:
            return self.client.get_run(run_id).info.status != "RUNNING"
        except Exception:
            return True

    # -- writing runs -----------------------------------------------------------------------------
    def start_parent(self, experiment_id: str, *, name: str, tags: Mapping[str, str],
                     params: Mapping[str, Any] | None = None, texts: Mapping[str, str] | None = None) -> str:
        """Create a parent run (RUNNING, with who writes it and a first heartbeat); returns its id."""
        run = self.client.create_run(experiment_id, run_name=name, tags={
            schema.KIND_TAG: schema.PARENT, schema.PID_TAG: str(os.getpid()), schema.HOST_TAG: socket.gethostname(),
            schema.HEARTBEAT_TAG: str(int(time.time())), **tags})
        run_id = run.info.run_id
        try:
            self.log_parent_details(run_id, params or {}, texts or {})
        except BaseException as exc:  # never leave a parent RUNNING that nobody will end
            self.client.set_tag(run_id, schema.STATUS_REASON_TAG,
                                f"could not start: {type(exc).__name__}: {str(exc)[:500]}")
            self.client.set_terminated(run_id, "FAILED")
            raise
        return run_id

    def log_parent_details(self, run_id: str, params: Mapping[str, Any], texts: Mapping[str, str]) -> None:
        """A parent run's params (once: MLflow params are immutable) and text artifacts (spec, plan)."""
        from mlflow.entities import Param, RunTag

        self.client.log_batch(run_id, params=[Param(k, str(v)[:schema.MAX_PARAM]) for k, v in params.items()],
                              tags=[RunTag(schema.STARTED_TAG, time.strftime("%Y-%m-%d %H:%M:%S"))])
        for artifact, text in texts.items():
            self.client.log_text(run_id, text, artifact)

    def delete_run(self, run_id: str) -> None:
        """Delete a run (MLflow's soft delete: gone from the UI, kept in its trash until ``mlflow gc``)."""
        self.client.delete_run(run_id)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)

    def log_text(self, run_id: str, text: str, artifact: str) -> None:
        self.client.log_text(run_id, text, artifact)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], tags: Mapping[str, str] | None = None
                    ) -> None:
        """Add (or update) metrics on an existing run, with any tags, in one call (scores, ratings).

        Logged at step 0 with the current time: MLflow shows the latest value, and keeps the history.
        """
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                              tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])

    def log_bytes(self, run_id: str, data: bytes, artifact: str) -> None:
        """Log ``data`` as the artifact ``artifact`` (``report/effects-clip_score.png``), via a temp file."""
        folder, _, name = artifact.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            self.client.log_artifact(run_id, str(path), folder or None)

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

    def log_image_run(self, experiment_id: str, parent_run_id: str | None, result: GenerationResult, *,
                      extra_tags: Mapping[str, str] | None = None, name: str | None = None,
                      extra_metrics: Mapping[str, float] | None = None) -> str:
        """Write one image run completely (params, tags, metrics, artifacts), then terminate it."""
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        request = result.request
        tags = {**image_tags(result, parent_run_id), **(extra_tags or {})}
        run = self.client.create_run(experiment_id, run_name=name or run_name(result), tags=tags)
        run_id = run.info.run_id
        try:
            # result.metrics: what the backend reported, plus the scores the logger's prepare hook added
            # (workbench/evaluate/: image statistics, CLIP, adherence), computed off the generating thread.
            metrics = {schema.LATENCY_METRIC: result.latency_s, **result.metrics}
            if result.cost_usd is not None:
                metrics[schema.COST_METRIC] = result.cost_usd
            if isinstance(result, GeneratedImage):
                metrics.update({schema.BATCH_SIZE_METRIC: result.batch_size,
                                schema.BATCH_INDEX_METRIC: result.batch_index})
                if result.revised_prompt is not None:  # how far the backend rewrote the prompt, sortable
                    drift = diff_prompts(request.prompt, result.revised_prompt).drift
                    metrics[schema.PROMPT_DRIFT_METRIC] = drift
            metrics.update(extra_metrics or {})
            now = int(time.time() * 1000)
            self.client.log_batch(
                run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                params=[Param(k, v) for k, v in request_params(request).items()],
                tags=[RunTag(schema.RUN_ID_TAG, run_id)])
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                write_image_artifacts(folder, result, run_id=run_id, experiment_id=experiment_id,
                                      tracking_uri=self.uri)
                # The repository from the run we just created: client.log_artifacts would fetch the run
                # again to learn its artifact URI, one more round trip per image on a remote server.
                get_artifact_repository(run.info.artifact_uri, tracking_uri=self.uri).log_artifacts(str(folder))
            self.client.set_terminated(run_id, "FINISHED" if isinstance(result, GeneratedImage) else "FAILED")
        except BaseException:
            try:
                self.client.set_terminated(run_id, "FAILED")
                self.client.set_tag(run_id, schema.STATUS_REASON_TAG, "logging failed before the run was complete")
            finally:
                raise
        return run_id

    def log_reproduction(self, experiment_id: str, result: GeneratedImage, *, tags: Mapping[str, str], name: str,
                         metrics: Mapping[str, float]) -> str:
        """Log a reproduced image as a run of its own (kind ``reproduction``); returns its id.

        It is nested under the experiment's one ``reproductions`` run, so reproductions fold away in the
        MLflow UI instead of crowding the sweeps' parent runs.
        """
        group = self.reproductions_run(experiment_id)
        return self.log_image_run(experiment_id, group, result, name=name, extra_metrics=metrics,
                                  extra_tags={schema.KIND_TAG: schema.REPRODUCTION, **tags})

    def reproductions_run(self, experiment_id: str) -> str:
        """The run that groups ``experiment_id``'s reproductions (made by the first one, FINISHED at once)."""
        query = f"tags.`{schema.KIND_TAG}` = '{schema.REPRODUCTIONS}'"
        page = self.client.search_runs([experiment_id], filter_string=query, max_results=1,
                                       order_by=["attributes.start_time ASC"])
        if page:  # two reproduce commands at once may each make one: the oldest is used from then on
            return str(page[0].info.run_id)
        run = self.client.create_run(experiment_id, run_name="reproductions", tags={
            schema.KIND_TAG: schema.REPRODUCTIONS,
            schema.NOTE_TAG: "Every `workbench reproduce` of this experiment's runs, nested here."})
        self.client.set_terminated(run.info.run_id, "FINISHED")
        return str(run.info.run_id)


def _record(run: Run) -> RunRecord:
    return RunRecord(run_id=run.info.run_id, status=run.info.status,
                     run_key=run.data.tags.get(schema.RUN_KEY_TAG, ""),
                     params=dict(run.data.params), tags=dict(run.data.tags), metrics=dict(run.data.metrics),
                     artifact_uri=run.info.artifact_uri, start_time=run.info.start_time or 0,
                     experiment_id=str(run.info.experiment_id))


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
