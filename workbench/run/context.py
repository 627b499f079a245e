"""What one execution of a plan shares: the ``ExecutionContext`` both executors take, and its ``RunSummary``.

The runner builds the context (the parent run, the background logger, the progress bar) and hands it
to the local executor or the Ray executor; both count through it. The summary is written by the
thread that drives the executor only (results are counted where they are collected, never on a pool
or logging thread), so its counters need no lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..tracking.logger import LOG_FAILED, SPOOLED, BackgroundLogger, LoggedRun
from ..tracking.store import Tracker
from ..types import GenerationResult
from .batch import RetryPolicy
from .plan import Plan

__all__ = ["RunSummary", "ImageRun", "ExecutionContext", "ProgressBar", "OUTCOMES"]

OUTCOMES = {"FINISHED": "generated", "FAILED": "failed", "BLOCKED": "blocked"}  # a result's status → outcome


@dataclass(frozen=True)
class ImageRun:
    """One image of the sweep as this run left it: its MLflow run, and what happened to it.

    ``outcome`` is ``generated``, ``skipped`` (already logged by an earlier run), ``failed`` or ``blocked``;
    ``run_id`` is None only for an image the store did not take (spooled: the next run uploads it).
    """

    run_id: str | None
    run_key: str
    outcome: str
    cell: str  # "base" or "factor=level"
    seed: int | None
    reason: str | None = None  # why it failed or was blocked


@dataclass
class RunSummary:
    """What ``run_experiment`` did: counts, where things went, and why it stopped early (if it did)."""

    experiment: str
    experiment_id: str
    parent_run_id: str | None  # None: nothing was left to generate, so no parent run was made
    tracking_uri: str
    planned: int
    skipped: int
    finished: int = 0
    failed: int = 0
    blocked: int = 0
    not_run: int = 0
    log_failures: list[LoggedRun] = field(default_factory=list)  # written nowhere (store and spool failed)
    spooled: list[LoggedRun] = field(default_factory=list)  # saved locally, uploaded by the next run
    spool_dir: Path | None = None
    stopped: str | None = None  # why the sweep stopped early (fatal error, Ctrl-C)
    seconds: float = 0.0
    grids: list[Path] = field(default_factory=list)
    retries: int = 0
    oom_splits: int = 0  # batches halved after running out of device memory
    worker_deaths: int = 0  # Ray workers that died mid-sweep (their batches were retried elsewhere)
    runs: list[ImageRun] = field(default_factory=list)  # every image of the plan that has a run, in plan order
    waited_for: str | None = None  # the parent run of another run of this experiment that this one waited for
    logged_runs: list[LoggedRun] = field(default_factory=list, repr=False)  # what the logger said of each

    @property
    def first_failure(self) -> ImageRun | None:
        """The first image that failed (its ``reason`` says why), or None."""
        return next((r for r in self.runs if r.outcome == "failed"), None)

    @property
    def logged(self) -> int:
        return self.finished + self.failed + self.blocked

    @property
    def ok(self) -> bool:
        return self.stopped is None and not self.log_failures and not self.spooled

    def count(self, status: str) -> None:
        """Count one result by its status: FINISHED, BLOCKED, or anything else as failed."""
        if status == "FINISHED":
            self.finished += 1
        elif status == "BLOCKED":
            self.blocked += 1
        else:
            self.failed += 1

    def add_logged(self, logged: Iterable[LoggedRun]) -> None:
        """Keep what became of each result, and apart what the store did not take (spooled, written nowhere)."""
        for entry in logged:
            self.logged_runs.append(entry)
            if entry.outcome == SPOOLED:
                self.spooled.append(entry)
            elif entry.outcome == LOG_FAILED:
                self.log_failures.append(entry)


class ProgressBar:
    """A rich progress bar on stderr (quiet when disabled or when there is nothing to do)."""

    def __init__(self, total: int, *, enabled: bool, description: str) -> None:
        self._progress = None
        if not enabled or total == 0:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                  console=Console(stderr=True))
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, status="")

    def advance(self, n: int, summary: RunSummary) -> None:
        if self._progress is not None:
            status = f"failed {summary.failed}" if summary.failed else ""
            if summary.blocked:
                status += f" blocked {summary.blocked}"
            self._progress.update(self._task, advance=n, status=status.strip())

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


@dataclass
class ExecutionContext:
    """One execution of a plan, as both executors see it: what to run, where to log it, how to count it."""

    plan: Plan
    tracker: Tracker
    experiment_id: str
    parent_run_id: str
    summary: RunSummary
    retry: RetryPolicy
    progress: ProgressBar
    logger: BackgroundLogger  # the runner closes it (and so flushes every result) when the sweep ends
    stop: threading.Event = field(default_factory=threading.Event)  # set: no new backend calls

    def record(self, results: Iterable[GenerationResult]) -> None:
        """Count results generated here; hand them to the background logger as one batch (scored together)."""
        results = list(results)
        for result in results:
            self.summary.count(result.status)
        self.logger.submit_batch(results)
        self.progress.advance(len(results), self.summary)

    def count_batch(self, retries: int, oom_splits: int) -> None:
        """Count the retries and OOM splits one batch took."""
        self.summary.retries += retries
        self.summary.oom_splits += oom_splits

    def count_logged_elsewhere(self, statuses: Iterable[str]) -> None:
        """Count results a Ray worker generated and logged itself."""
        statuses = list(statuses)
        for status in statuses:
            self.summary.count(status)
        self.progress.advance(len(statuses), self.summary)
