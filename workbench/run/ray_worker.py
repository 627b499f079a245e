"""The body of a Ray worker (an actor): one backend and its pipeline cache, loaded once, and a tracker to
the shared store. ``ray_executor`` is the driver that starts these and hands them batches.

Each batch generates with the local executor's retry and OOM rules (``batch.run_batch``), is scored here
(``evaluate.scoring``: the CLIP model is loaded once per worker), then every image is logged straight to the
store; only a small ``BatchOutcome`` goes back to the driver, never an image.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass

from ..backends.registry import get_backend
from ..evaluate.scoring import ScoreConfig, Scoring, scoring_for
from ..tracking.logger import BackgroundLogger, LoggedRun
from ..tracking.schema import WORKER_TAG
from ..tracking.store import Tracker
from ..types import GenerationRequest
from .batch import RetryPolicy, run_batch

__all__ = ["BatchOutcome", "GenerationWorker"]


@dataclass
class BatchOutcome:
    """What a worker sends back for one batch: a line per image, never the image."""

    worker: str
    logged: list[LoggedRun]
    statuses: dict[str, str]  # run_key -> FINISHED / FAILED / BLOCKED
    retries: int = 0
    oom_splits: int = 0
    seconds: float = 0.0


class GenerationWorker:
    """A Ray actor's body: a backend (and its pipeline cache) loaded once, a tracker to the shared store."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, experiment: str,
                 retry: RetryPolicy, scoring: ScoreConfig | None = None) -> None:
        self.tracker = Tracker(tracking_uri)
        self.tracker.connect()  # and import MLflow now, before two batches run at once
        self.experiment_id, self.parent_run_id, self.experiment = experiment_id, parent_run_id, experiment
        self.retry = retry
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._device = threading.Lock()  # one batch generates at a time; the other one logs
        self._stop = threading.Event()
        self.score_config = scoring or ScoreConfig()
        self._scoring: Scoring | None = None  # loaded with the first batch; a model that fails stops it

    def where(self) -> str:
        return self.name

    def run_batch(self, batch: list[GenerationRequest]) -> BatchOutcome:
        started = time.perf_counter()
        with self._device:  # also guards the first import of a backend: never two threads at once
            backend = get_backend(batch[0].backend)
            if self._scoring is None:
                loaded = scoring_for(self.score_config)
                loaded.load()  # a ScoringModelError reaches the driver, which stops the sweep with it
                self._scoring = loaded
            scoring = self._scoring
            done = run_batch(backend, batch, self.retry, self._stop)
        results = done.results
        # The batch is reported only once every image is in the store: a worker that dies before
        # this return loses nothing the driver believes is safe.
        logger = BackgroundLogger(self.tracker, self.experiment_id, self.parent_run_id, experiment=self.experiment,
                                  extra_tags={WORKER_TAG: self.name, **scoring.run_tags()},
                                  prepare=scoring.prepare)
        logger.submit_batch(results)
        return BatchOutcome(worker=self.name, logged=logger.close(),
                            statuses={r.request.run_key: r.status for r in results}, retries=done.retries,
                            oom_splits=done.oom_splits, seconds=time.perf_counter() - started)
