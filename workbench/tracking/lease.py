"""The writer lease of an experiment: one ``workbench run`` generates into an experiment at a time.

Two runs of one spec started together would otherwise both plan the same images and log each twice. So a
run takes the experiment's lease before it generates, and a second run waits for the first to end, then
plans again and does only what is left (usually nothing). The lease lives in the store itself, as a tag
on the parent run (``workbench.lease``), so it works across hosts and on a remote ``mlflow server``.

MLflow has no compare-and-set, so the protocol is write-then-read: a run sets its tag to ``trying``, then
reads the experiment's running parents; it holds the lease only if no other live parent is ``trying`` or
``held``, else it steps back to ``waiting`` and tries again after a random pause. Two runs cannot both
win: the later of the two reads sees the other's ``trying`` (a winner never steps back). Both may lose
a round; the random pause separates them.

A crashed holder does not block forever: on this host a parent whose process is gone is not alive; on
another host, one whose heartbeat (``workbench.heartbeat``, refreshed by ``Heartbeat``) is older than
``lease_ttl_s()`` is not (hosts' clocks are assumed to agree within that). ``Tracker.writer_alive``
decides, and ``Tracker.reap_stale_runs`` marks such runs KILLED.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable

from .schema import HEARTBEAT_TAG, LEASE_HELD, LEASE_TAG, LEASE_TRYING, LEASE_WAITING, RunRecord
from .store import WRITING_HERE, Tracker, lease_ttl_s

__all__ = ["acquire_lease", "Heartbeat", "lease_ttl_s"]


def _poll_s() -> float:
    return float(os.environ.get("WORKBENCH_LEASE_POLL_S", "2"))


def acquire_lease(tracker: Tracker, experiment_id: str, run_id: str, *,
                  on_wait: Callable[[RunRecord], None] | None = None) -> bool:
    """Hold the experiment's lease for parent run ``run_id``, waiting while another live run holds it.

    ``on_wait`` is called once, with the holder, when another live run holds the lease. A round lost only
    to another run's ``trying`` is contention, not a wait: nobody generates yet, so nothing is said.
    Returns whether it waited for a holder (the caller then plans again: the holder finished images).
    """
    waited = False
    while True:
        tracker.set_tags(run_id, {LEASE_TAG: LEASE_TRYING})
        others = [r for r in tracker.running_parents(experiment_id)
                  if r.run_id != run_id and r.tags.get(LEASE_TAG) in (LEASE_TRYING, LEASE_HELD)
                  and tracker.writer_alive(r)]
        if not others:
            tracker.set_tags(run_id, {LEASE_TAG: LEASE_HELD})
            return waited
        tracker.set_tags(run_id, {LEASE_TAG: LEASE_WAITING})
        holder = next((r for r in others if r.tags.get(LEASE_TAG) == LEASE_HELD), None)
        if holder is not None and not waited:
            if on_wait is not None:
                on_wait(holder)
            waited = True
        time.sleep(_poll_s() * (0.5 + random.random()))  # random: two runs that both stepped back part


class Heartbeat:
    """Refresh a run's heartbeat tag on a daemon thread, so other hosts can tell it is alive."""

    def __init__(self, tracker: Tracker, run_id: str, interval_s: float | None = None) -> None:
        self._tracker, self._run_id = tracker, run_id
        WRITING_HERE.add(run_id)
        self._interval = interval_s if interval_s is not None else lease_ttl_s() / 5
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="workbench-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._tracker.set_tags(self._run_id, {HEARTBEAT_TAG: str(int(time.time()))})
            except Exception:  # the store is busy or gone: a missed beat only ages the lease
                continue

    def stop(self) -> None:
        WRITING_HERE.discard(self._run_id)
        self._stop.set()
        self._thread.join(timeout=5)
