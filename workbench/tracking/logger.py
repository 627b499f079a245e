"""``BackgroundLogger``: image runs written on worker threads, so generation never waits for the store.

PNG encoding and store I/O happen here, off the generating thread. So does scoring: each generation
batch arrives as one unit (``submit_batch``) and a worker hands it to the injected ``prepare(results) ->
results`` hook first (``workbench.evaluate.scoring.Scoring.prepare`` adds image statistics, CLIP and
adherence scores to each result's ``metrics``, one batched model call per backend call). The hook is
injected because tracking sits below evaluate; a hook that fails costs the scores, never the image.

A write that still fails after its retries is kept in the local spool (``spool.py``), and the logger stops
spending retries on a store that is gone (``store_failed``); ``close()`` says what happened to every result.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import TrackingError
from ..types import GenerationResult
from .schema import SCORING_NOTE
from .spool import spool_result
from .store import Tracker

__all__ = ["BackgroundLogger", "LoggedRun", "Prepare", "SPOOLED", "LOG_FAILED"]

SPOOLED, LOG_FAILED = "SPOOLED", "LOG_FAILED"  # what became of a result the store did not take
# Runs on a logging thread before a batch is written: the same results, in order, with metrics added.
Prepare = Callable[[list[GenerationResult]], list[GenerationResult]]


@dataclass(frozen=True)
class LoggedRun:
    """What became of one result: its run id and status, or SPOOLED / LOG_FAILED with the error."""

    run_key: str
    run_id: str | None
    outcome: str  # the result's status (FINISHED, FAILED, BLOCKED), or SPOOLED / LOG_FAILED
    error: str | None = None  # why the store did not take it
    reason: str | None = None  # why the image failed or was blocked (the run's status reason)
    status: str = ""  # the result's own status (FINISHED, FAILED, BLOCKED), whatever the store did


@dataclass
class BackgroundLogger:
    """Logs image runs on worker threads; ``submit_batch`` blocks only while ``max_pending`` batches wait.

    Bounded, so memory stays flat however fast the generator is; ``close()`` waits until every
    submitted result is written and returns what happened to each. ``prepare`` (optional) scores each
    batch on the worker thread before it is written.
    """

    tracker: Tracker
    experiment_id: str
    parent_run_id: str | None
    workers: int = 2
    max_pending: int = 32
    extra_tags: Mapping[str, str] = field(default_factory=dict)
    experiment: str = ""
    on_logged: Callable[[LoggedRun], None] | None = None  # called from the worker threads
    prepare: Prepare | None = None  # called from the worker threads, once per submitted batch

    def __post_init__(self) -> None:
        self._queue: queue.Queue[list[GenerationResult] | None] = queue.Queue(maxsize=self.max_pending)
        self._done: list[LoggedRun] = []
        self._lock = threading.Lock()
        self.store_failed = threading.Event()  # set when a write failed for good: the runner stops
        self._threads = [threading.Thread(target=self._work, name=f"workbench-log-{i}", daemon=True)
                         for i in range(self.workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, result: GenerationResult) -> None:
        self.submit_batch([result])

    def submit_batch(self, results: Sequence[GenerationResult]) -> None:
        """Queue the results of one backend call as one unit: prepared (scored) together, then written."""
        if results:
            self._queue.put(list(results))

    def _work(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            for result in self._prepared(batch):
                self._log(result)

    def _prepared(self, batch: list[GenerationResult]) -> list[GenerationResult]:
        if self.prepare is None:
            return batch
        try:
            prepared = self.prepare(batch)
            if [r.request.run_key for r in prepared] != [r.request.run_key for r in batch]:
                raise ValueError("the prepare hook must return the same results, in the same order")
            return prepared
        except Exception as exc:  # the scores are lost, the images are not
            note = f"scores not computed: {type(exc).__name__}: {str(exc)[:500]}"
            return [dataclasses.replace(r, notes={**r.notes, SCORING_NOTE: note}) for r in batch]

    def _log(self, result: GenerationResult) -> None:
        outcome = result.status
        reason: str | None = getattr(result, "reason", None)
        try:
            if self.store_failed.is_set():  # the store is gone: don't spend retries on every image
                raise TrackingError("the store already failed during this run")
            run_id = self._log_with_retry(result)
            logged = LoggedRun(result.request.run_key, run_id, outcome, reason=reason, status=outcome)
        except Exception as exc:  # the store is gone: keep the image in the local spool
            self.store_failed.set()
            error = f"{type(exc).__name__}: {str(exc)[:300]}"
            try:
                where = spool_result(result, tracking_uri=self.tracker.uri, experiment=self.experiment,
                                     parent_run_id=self.parent_run_id)
                logged = LoggedRun(result.request.run_key, None, SPOOLED, f"{error}; saved in {where}",
                                   reason=reason, status=outcome)
            except Exception as spool_exc:
                logged = LoggedRun(result.request.run_key, None, LOG_FAILED, f"{error}; spool: {spool_exc}",
                                   reason=reason, status=outcome)
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
