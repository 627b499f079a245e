"""The body of a Ray worker (an actor): one backend and its pipeline cache, loaded once, and a tracker to
the shared store. ``ray_executor`` is the driver that starts these and hands them batches.

Each batch generates with the local executor's retry and OOM rules (``runner.generate_with_retry``),
then every image is logged straight to the store; only a small ``BatchOutcome`` goes back to the
driver, never an image.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from .tracking import BackgroundLogger, LoggedRun, Tracker
from .types import GenerationRequest

__all__ = ["WORKER_TAG", "BatchOutcome", "GenerationWorker"]

WORKER_TAG = "workbench.worker"  # host:pid of the Ray worker that generated and logged an image run


@dataclass
class BatchOutcome:
    """What a worker sends back for one batch: a line per image, never the image."""

    worker: str
    logged: list[LoggedRun]
    statuses: dict[str, str]  # run_key -> FINISHED / FAILED / BLOCKED
    retries: int = 0
    oom_splits: int = 0
    seconds: float = 0.0


@dataclass
class _Tally:  # runner.Counters for one batch on a worker
    retries: int = 0
    oom_splits: int = 0


class GenerationWorker:
    """A Ray actor's body: a backend (and its pipeline cache) loaded once, a tracker to the shared store."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, experiment: str,
                 retry: Any) -> None:
        self.tracker = Tracker(tracking_uri)
        self.tracker.client  # noqa: B018  connect (and import MLflow) now, before two batches run at once
        self.experiment_id, self.parent_run_id, self.experiment = experiment_id, parent_run_id, experiment
        self.retry = retry
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._device = threading.Lock()  # one batch generates at a time; the other one logs
        self._stop = threading.Event()

    def where(self) -> str:
        return self.name

    def run_batch(self, batch: list[GenerationRequest]) -> BatchOutcome:
        from .backends.registry import get_backend
        from .runner import generate_with_retry

        started = time.perf_counter()
        tally = _Tally()
        with self._device:  # also guards the first import of a backend: never two threads at once
            backend = get_backend(batch[0].backend)
            results = generate_with_retry(backend, batch, self.retry, tally, self._stop)
        # The batch is reported only once every image is in the store: a worker that dies before
        # this return loses nothing the driver believes is safe.
        logger = BackgroundLogger(self.tracker, self.experiment_id, self.parent_run_id, experiment=self.experiment,
                                  extra_tags={WORKER_TAG: self.name})
        for result in results:
            logger.submit(result)
        return BatchOutcome(worker=self.name, logged=logger.close(),
                            statuses={r.request.run_key: r.status for r in results}, retries=tally.retries,
                            oom_splits=tally.oom_splits, seconds=time.perf_counter() - started)
