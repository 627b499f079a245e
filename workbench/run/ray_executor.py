"""Spread a plan's batches over a Ray cluster: one actor per GPU (or CPU slot), each loading its pipeline once.

The driver (``runner.run_plan``) keeps what it keeps locally: the parent run, the one progress bar, the
summary and the grids (the ``ExecutionContext`` the local executor takes too). The actors generate with the same retry and OOM rules as the local executor and
log every image straight to the tracking store, returning one small outcome per image; images never
travel through the driver. A worker that dies loses only its in-flight batches: the driver marks the
runs it left half-written KILLED and sends the images it had not finished to another worker. The
driver never asks for more workers than the cluster can hold, and never waits forever for one to start.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from ..config import is_local_sqlite
from ..errors import MissingDependencyError, UserInputError, WorkbenchError
from ..tracking.logger import LoggedRun
from ..tracking.schema import OUTCOME_TAG, RAY_NOTE_TAG, RAY_WORKERS_TAG
from ..tracking.store import Tracker
from ..types import GenerationRequest
from .batch import failures
from .context import ExecutionContext
from .ray_worker import BatchOutcome, GenerationWorker

__all__ = ["RayOptions", "preflight", "execute_on_ray"]

START_TIMEOUT_ENV = "WORKBENCH_RAY_START_TIMEOUT_S"
DEFAULT_START_TIMEOUT_S = 300.0  # a GPU node an autoscaler adds takes minutes; a local actor ~6 s
IN_FLIGHT_PER_WORKER = 2  # one batch on the device while the previous one is being logged
# Forwarded to the workers: where models and stores are, API endpoints and keys, test knobs.
FORWARDED_ENV = ("WORKBENCH_", "MLFLOW_", "OPENAI_", "REPLICATE_", "HF_", "TRANSFORMERS_", "DIFFUSERS_")


@dataclass(frozen=True)
class RayOptions:
    """How to reach and use the cluster (``workbench run --executor ray``)."""

    address: str | None = None  # None: start a local Ray for this run; "auto", "HOST:6379" or "ray://HOST:10001"
    workers: int | None = None  # default: one per GPU when the cluster has GPUs, else one per CPU
    gpus_per_worker: float | None = None  # default: 1 when the cluster has GPUs and the backend uses them
    max_deaths_per_batch: int = 3  # a batch whose workers keep dying fails instead of looping forever
    # A worker Ray has not started by then is given up on; None: $WORKBENCH_RAY_START_TIMEOUT_S, else 300 s.
    start_timeout_s: float | None = None


@dataclass
class _Slot:
    """One actor and what the driver has sent it."""

    actor: Any
    ready: Any = None  # where()'s reference: resolves once Ray has placed the actor and built it
    started: float = field(default_factory=time.monotonic)
    name: str | None = None
    placed: bool = False
    in_flight: int = 0
    dead: bool = False


@dataclass
class _Job:
    batch: list[GenerationRequest]
    deaths: int = 0  # how many workers died holding this batch
    slot: _Slot | None = None


@dataclass
class _Driver:
    """The dispatch loop: keep every worker busy, count outcomes, and recover from dead workers."""

    ctx: ExecutionContext
    options: RayOptions
    ray: Any  # the ray module, imported only when a sweep runs on Ray
    slots: list[_Slot] = field(default_factory=list)
    pending: dict[Any, _Job] = field(default_factory=dict)
    queue: deque[_Job] = field(default_factory=deque)
    replacements: int = 0

    def run(self) -> None:
        self.queue.extend(_Job(batch) for batch in self.ctx.plan.batches)
        self._timeout = self._start_timeout()
        workers, resources = self._sizing()
        self._resources = resources
        self._actor_class = self.ray.remote(**resources)(GenerationWorker)
        self.slots = [self._start_worker() for _ in range(workers)]
        try:
            while self.queue or self.pending:
                self._dispatch()
                starting = {slot.ready: slot for slot in self.slots if not slot.placed and not slot.dead}
                ready, _ = self.ray.wait([*self.pending, *starting], num_returns=1, timeout=0.5)
                for ref in ready:
                    if ref in starting:
                        self._placed(starting[ref], ref)
                    else:
                        self._collect(ref)
                self._give_up_on_late_workers()
        except BaseException:
            for slot in self.slots:  # batches sent to a worker that never started would hold up the drain
                if not slot.dead and not self._has_started(slot):
                    self._drop(slot)
            self._drain()  # let in-flight batches finish and count them: they are in the store
            raise
        finally:
            for slot in self.slots:
                self.ray.kill(slot.actor, no_restart=True)

    def _sizing(self) -> tuple[int, dict[str, float]]:
        cluster = self.ray.cluster_resources()
        cpus, gpus_total = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
        uses_gpu = any(r.backend == "diffusers" for r in self.ctx.plan.todo)
        gpus = self.options.gpus_per_worker
        if gpus is None:
            gpus = 1.0 if uses_gpu and gpus_total >= 1 else 0.0
        # Each actor reserves 1 CPU and `gpus` GPUs; one more than the cluster holds would wait forever.
        fits = int(cpus + 1e-9)
        if gpus:
            fits = min(fits, int(gpus_total / gpus + 1e-9))
        need = "1 CPU" + (f" and {gpus:g} GPU(s)" if gpus else "")
        have = f"{cpus:g} CPU(s) and {gpus_total:g} GPU(s)"
        if fits < 1:
            raise UserInputError(f"each Ray worker needs {need}, and the Ray cluster has {have} in all, so "
                                 f"no worker fits; add nodes (a head started with --num-cpus=0 needs worker "
                                 f"nodes before a sweep starts), or use a cluster with GPUs")
        wanted = self.options.workers or (int(gpus_total / gpus + 1e-9) if gpus else int(cpus + 1e-9))
        if wanted > fits:
            _warn(self.ctx,
                  f"{wanted} Ray workers were asked for, but the cluster ({have}) holds {fits} of {need} "
                  f"each: running {fits}")
        workers = max(1, min(wanted, fits, len(self.ctx.plan.batches)))
        self.ctx.tracker.set_tags(self.ctx.parent_run_id, {RAY_WORKERS_TAG: str(workers)})
        return workers, {"num_cpus": 1, "num_gpus": gpus, "max_concurrency": IN_FLIGHT_PER_WORKER}

    def _start_worker(self) -> _Slot:
        # The environment goes with each actor (not only with ray.init): a cluster started earlier gets it too.
        ctx = self.ctx
        actor = self._actor_class.options(runtime_env={"env_vars": _forwarded_env()}).remote(
            ctx.tracker.uri, ctx.experiment_id, ctx.parent_run_id, ctx.plan.experiment, ctx.retry,
            ctx.plan.scoring)
        return _Slot(actor, ready=actor.where.remote())

    def _placed(self, slot: _Slot, ref: Any) -> None:
        slot.placed = True
        try:
            slot.name = self.ray.get(ref)
        except Exception:  # it died while starting: the batches sent to it say so, and are retried
            pass

    def _has_started(self, slot: _Slot) -> bool:
        if not slot.placed and self.ray.wait([slot.ready], timeout=0)[0]:
            self._placed(slot, slot.ready)
        return slot.placed

    def _drop(self, slot: _Slot) -> None:
        """Give up on a worker that never started; its batches never ran, so they go back to the queue."""
        slot.dead = True
        self.ray.kill(slot.actor, no_restart=True)
        for ref, job in list(self.pending.items()):
            if job.slot is slot:
                del self.pending[ref]
                self.queue.appendleft(_Job(job.batch, job.deaths))
        slot.in_flight = 0

    def _give_up_on_late_workers(self) -> None:
        """Workers Ray has not placed in time (resources held by other jobs, nodes gone) are dropped."""
        timeout = self._timeout
        now = time.monotonic()
        late = [s for s in self.slots
                if not s.dead and not s.placed and now - s.started > timeout and not self._has_started(s)]
        if not late:
            return
        for slot in late:
            self._drop(slot)
        need = f"{self._resources['num_cpus']:g} CPU" + (
            f" and {self._resources['num_gpus']:g} GPU(s)" if self._resources["num_gpus"] else "")
        free = self.ray.available_resources()
        why = (f"each needs {need}; free now: {float(free.get('CPU', 0)):g} CPU(s), "
               f"{float(free.get('GPU', 0)):g} GPU(s) (other Ray jobs or actors hold the rest: `ray status`)")
        alive = sum(not s.dead for s in self.slots)
        if not alive:
            raise WorkbenchError(f"no Ray worker started within {timeout:g} s ({why}); free the resources, "
                                 f"lower --workers, or set {START_TIMEOUT_ENV} higher for a cluster that is "
                                 f"still adding nodes, and run again (finished images are kept)")
        _warn(self.ctx,
              f"{len(late)} Ray worker(s) did not start within {timeout:g} s ({why}); going on with {alive}")

    def _start_timeout(self) -> float:
        if self.options.start_timeout_s is not None:
            return self.options.start_timeout_s
        raw = os.environ.get(START_TIMEOUT_ENV, "")
        try:
            return float(raw) if raw.strip() else DEFAULT_START_TIMEOUT_S
        except ValueError:
            raise UserInputError(f"{START_TIMEOUT_ENV}={raw!r} is not a number of seconds") from None

    def _dispatch(self) -> None:
        for slot in self.slots:
            while self.queue and not slot.dead and slot.in_flight < IN_FLIGHT_PER_WORKER:
                job = self.queue.popleft()
                job.slot = slot
                slot.in_flight += 1
                self.pending[slot.actor.run_batch.remote(job.batch)] = job

    def _collect(self, ref: Any) -> None:
        from ray.exceptions import RayActorError, RayTaskError

        job = self.pending.pop(ref)
        assert job.slot is not None
        job.slot.in_flight -= 1
        try:
            outcome: BatchOutcome = self.ray.get(ref)
        except RayActorError as exc:
            self._worker_died(job, exc)
            return
        except RayTaskError as exc:  # a fatal backend or store error: stop the sweep, as locally
            cause = getattr(exc, "cause", None)
            if isinstance(cause, (WorkbenchError, KeyboardInterrupt)):
                raise cause from None
            self._record_failures(job.batch, f"Ray task failed: {str(exc).splitlines()[0][:300]}", "RayTaskError")
            return
        job.slot.name = outcome.worker
        self._record(outcome)

    def _record(self, outcome: BatchOutcome) -> None:
        """Count a batch a worker generated and logged itself."""
        self.ctx.count_batch(outcome.retries, outcome.oom_splits)
        self.ctx.summary.add_logged(outcome.logged)
        self.ctx.count_logged_elsewhere(outcome.statuses.values())

    def _record_failures(self, batch: list[GenerationRequest], reason: str, error_type: str) -> None:
        """Fail a batch no worker could generate: logged from here, like the local executor's failures."""
        self.ctx.record(failures(batch, reason, error_type))

    def _worker_died(self, job: _Job, exc: Exception) -> None:
        slot = job.slot
        assert slot is not None
        if not slot.dead:  # first news of this death: replace the worker
            slot.dead = True
            self.ctx.summary.worker_deaths += 1
            self.replacements += 1
            if self.replacements > 2 * len(self.slots) + 2:
                raise WorkbenchError(f"Ray workers keep dying ({self.replacements} so far); the last one: "
                                     f"{str(exc).splitlines()[0][:300]}. Check the worker logs (ray logs) "
                                     f"for out-of-memory kills or import errors")
            self.slots.append(self._start_worker())
        done = self._reap(job)
        self.ctx.summary.add_logged(done)  # so RunSummary.runs lists them, as it does a batch that came back
        self.ctx.count_logged_elsewhere(entry.status for entry in done)
        logged_keys = {entry.run_key for entry in done}  # finished, failed or blocked: never again this sweep
        rest = [r for r in job.batch if r.run_key not in logged_keys]
        if not rest:
            return
        job.deaths += 1
        if job.deaths >= self.options.max_deaths_per_batch:
            self._record_failures(rest, f"the Ray worker died {job.deaths} times while generating this batch "
                                        f"({str(exc).splitlines()[0][:200]})", "WorkerDied")
        else:
            self.queue.appendleft(_Job(rest, job.deaths))  # retried first, on another worker

    def _reap(self, job: _Job) -> list[LoggedRun]:
        """Mark KILLED the runs of this batch the dead worker left RUNNING; return what it did log.

        One entry (FINISHED, FAILED or BLOCKED) for every image whose run is complete in the store: a failed
        image is retried by the next ``workbench run`` (as locally), never twice within one sweep.
        """
        keys = {r.run_key for r in job.batch}
        done: list[LoggedRun] = []
        for run in self.ctx.tracker.children(self.ctx.experiment_id, self.ctx.parent_run_id):
            if run.run_key not in keys:
                continue
            if run.status == "RUNNING":
                self.ctx.tracker.mark_killed(run.run_id, "the Ray worker logging this run died before it "
                                                         "finished; the image was generated again on another worker")
            # A FAILED run whose outcome says FINISHED is an image whose logging broke: generate it again.
            elif run.complete:
                status = run.tags[OUTCOME_TAG]
                done.append(LoggedRun(run.run_key, run.run_id, status, reason=run.reason or None, status=status))
        return done

    def _drain(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.pending and time.monotonic() < deadline:
            ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            for ref in ready:
                self.pending.pop(ref)
                try:
                    self._record(self.ray.get(ref))
                except Exception:  # a dead or failed batch is not counted; the next run regenerates it
                    pass


def _forwarded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}


def _warn(ctx: ExecutionContext, message: str) -> None:
    """A line on stderr now (above the progress bar), and a tag on the parent run for later readers."""
    print(f"workbench: warning: {message}", file=sys.stderr, flush=True)
    ctx.tracker.set_tags(ctx.parent_run_id, {RAY_NOTE_TAG: message[:5000]})


def preflight(tracker: Tracker, options: RayOptions) -> None:
    """Fail before the parent run exists: Ray missing, or a remote cluster that cannot reach the store."""
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("ray", "ray") from exc
    address = options.address
    if address is None or not (is_local_sqlite(tracker.uri) or tracker.uri.startswith("file:")):
        return
    host = urlparse(address if "://" in address else f"ray://{address}").hostname or ""
    if host not in ("127.0.0.1", "localhost", socket.gethostname(), ""):
        # Workers on other machines cannot write to a SQLite file on this one.
        raise UserInputError(f"the Ray cluster at {address} cannot write to the local store {tracker.display_uri}; "
                             f"run a tracking server (docs/scale.md) and pass --tracking-uri http://HOST:PORT")


def execute_on_ray(ctx: ExecutionContext, options: RayOptions) -> None:
    """Run ``ctx.plan.batches`` on Ray workers (see the module docstring); counts go into ``ctx.summary``."""
    import ray

    if not ctx.plan.batches:
        return
    started_here = not ray.is_initialized()
    if started_here:
        init: dict[str, Any] = {"log_to_driver": False, "logging_level": "ERROR"}
        if options.address is None:
            # "local": a new Ray of our own, even where `ray start` or $RAY_ADDRESS points at another one.
            init.update(address="local", include_dashboard=False, num_cpus=os.cpu_count() or 1)
        else:
            init["address"] = options.address
        ray.init(**init)
    try:
        _Driver(ctx, options, ray).run()
    finally:
        if started_here:
            ray.shutdown()
