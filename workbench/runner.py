"""The one orchestrator: plan → batches → backend → background logging → grids → summary.

Only this module loops and retries. Retryable backend errors (429, 5xx, timeouts) are retried a
bounded number of times with backoff that honours Retry-After; fatal ones (auth, quota) stop the
sweep at once; anything else fails just the affected runs and the sweep goes on. Whatever
happens, every finished image is flushed to the store before ``run_experiment`` returns.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from .config import workbench_home
from .provenance.environment import run_environment
from .errors import BackendError, BudgetError, OutOfMemoryError, TrackingError, WorkbenchError
from .experiments.spec import ExperimentSpec, load_spec
from .grid import grid_from_records, safe_name, save_png_atomic, varying_keys
from .hashing import canonical_json, content_hash
from .plan import Plan, make_plan
from .ray_executor import RayOptions
from .tracking import BackgroundLogger, LoggedRun, Tracker, request_params
from .types import GenerationFailure, GenerationRequest, GenerationResult

__all__ = ["RunSummary", "run_experiment", "run_plan", "RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # tries per batch, the first included
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay_s)
        backoff = min(self.base_delay_s * 2 ** attempt, self.max_delay_s)
        return backoff * (0.75 + 0.25 * random.random())  # jitter, so parallel calls don't retry in step


@dataclass
class RunSummary:
    experiment: str
    experiment_id: str
    parent_run_id: str
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

    @property
    def logged(self) -> int:
        return self.finished + self.failed + self.blocked

    @property
    def ok(self) -> bool:
        return self.stopped is None and not self.log_failures and not self.spooled


def run_experiment(spec: ExperimentSpec | str | Path, *, tracking_uri: str | None = None,
                   experiment: str | None = None, max_cost: float | None = None, max_batch: int | None = None,
                   progress: bool = True, grids_dir: Path | None = None, make_grids: bool = True,
                   retry: RetryPolicy | None = None, library: Any = None, ray: RayOptions | None = None
                   ) -> RunSummary:
    """Run every image of ``spec`` that is not already logged, and log each one to MLflow.

    Example:
        >>> summary = run_experiment("experiments/quickstart.yaml", progress=False)  # doctest: +SKIP
        >>> summary.finished, summary.grids  # doctest: +SKIP
    """
    spec_text = None
    if not isinstance(spec, ExperimentSpec):
        spec_text = Path(spec).read_text(encoding="utf-8") if Path(spec).is_file() else None
        spec = load_spec(spec)
    tracker = Tracker(tracking_uri)
    tracker.check()  # before anything is generated
    recover(tracker, experiment or spec.name)
    plan = make_plan(spec, tracker=tracker, experiment=experiment, library=library, max_batch=max_batch)
    if max_cost is not None and plan.est_cost > max_cost:
        raise BudgetError(f"the plan is estimated at ${plan.est_cost:.2f}, over --max-cost ${max_cost:.2f}; "
                          f"reduce the sweep or raise the budget")
    return run_plan(plan, tracker, spec_text=spec_text, progress=progress, grids_dir=grids_dir,
                    make_grids=make_grids, retry=retry, ray=ray)


def recover(tracker: Tracker, experiment: str) -> tuple[int, int]:
    """Clean up after a crashed run: upload spooled images, mark dead processes' runs KILLED."""
    from .spool import upload_spool

    uploaded = upload_spool(tracker)
    experiment_id = tracker.experiment_id(experiment, create=False)
    reaped = tracker.reap_stale_runs(experiment_id) if experiment_id else 0
    return uploaded, reaped


def run_plan(plan: Plan, tracker: Tracker, *, spec_text: str | None = None, progress: bool = True,
             grids_dir: Path | None = None, make_grids: bool = True, retry: RetryPolicy | None = None,
             ray: RayOptions | None = None) -> RunSummary:
    """Execute a plan made by ``make_plan`` (see ``run_experiment``); on a Ray cluster when ``ray`` is given."""
    retry = retry or RetryPolicy()
    started = time.perf_counter()
    for name, backend in plan.backends.items():
        backend.preflight({r.model for r in plan.todo if r.backend == name})
    if ray is not None:
        from .ray_executor import preflight

        preflight(tracker, ray)
    experiment_id = tracker.experiment_id(plan.experiment)
    assert experiment_id is not None
    spec_dump = spec_text or yaml.safe_dump(plan.spec.model_dump(exclude_defaults=True), sort_keys=False)
    parent = tracker.start_parent(
        experiment_id, name=f"{plan.spec.name} {time.strftime('%Y-%m-%d %H:%M:%S')}",
        tags={"workbench.spec": plan.spec.name, "workbench.spec_hash": content_hash(spec_dump),
              "workbench.executor": "local" if ray is None else f"ray ({ray.address or 'local cluster'})"},
        params={"backend": plan.spec.backend, "model": plan.spec.model, "template": plan.spec.template or "",
                "seeds": len(plan.spec.seeds), "factors": ",".join(plan.spec.vary) or "(none)",
                "images": plan.total_images, "skipped": len(plan.done)},
        texts={"spec.yaml": spec_dump, "plan.json": canonical_json(plan.to_dict())})
    summary = RunSummary(experiment=plan.experiment, experiment_id=experiment_id, parent_run_id=parent,
                         tracking_uri=tracker.display_uri, planned=plan.total_images, skipped=len(plan.done))
    bar = _Progress(len(plan.todo), enabled=progress, description=plan.spec.name)
    logger = BackgroundLogger(tracker, experiment_id, parent, experiment=plan.experiment)
    status, reason = "FINISHED", None
    try:
        if ray is None:
            _execute(plan, logger, summary, retry, bar)
        else:
            from .ray_executor import execute_on_ray

            execute_on_ray(plan, tracker, experiment_id, parent, summary, retry, bar, ray)
    except KeyboardInterrupt:
        status, reason = "KILLED", "interrupted (Ctrl-C): finished images were kept; run again to resume"
        summary.stopped = reason
    except (BackendError, TrackingError) as exc:  # fatal: auth, quota, missing dependency, store gone
        status, reason = "FAILED", f"{type(exc).__name__}: {exc}"
        summary.stopped = reason
    except BaseException as exc:  # a bug: the parent run says so (not FINISHED), and the traceback goes on up
        status, reason = "FAILED", f"unexpected {type(exc).__name__}: {str(exc)[:500]}"
        summary.stopped = reason
        raise
    finally:
        bar.close()
        logged = logger.close()  # flush: every finished image reaches the store (or the spool)
        summary.spooled += [entry for entry in logged if entry.outcome == "SPOOLED"]
        summary.log_failures += [entry for entry in logged if entry.outcome == "LOG_FAILED"]
        summary.not_run = summary.planned - summary.skipped - summary.logged
        summary.seconds = time.perf_counter() - started
        if summary.spooled:
            from .spool import spool_dir

            summary.spool_dir = spool_dir(tracker.uri)
        if summary.spooled or summary.log_failures:
            first = (summary.spooled + summary.log_failures)[0].error or "no error recorded"
            summary.stopped = summary.stopped or f"the tracking store stopped taking writes (first error: {first})"
        else:
            _finish_parent(plan, tracker, parent, summary, status, reason, grids_dir, make_grids)
    return summary


def _finish_parent(plan: Plan, tracker: Tracker, parent: str, summary: RunSummary, status: str, reason: str | None,
                   grids_dir: Path | None, make_grids: bool) -> None:
    if make_grids and summary.logged + summary.skipped:
        summary.grids = _write_grids(plan, tracker, parent, grids_dir)
    tracker.log_text(parent, canonical_json(_summary_dict(summary)), "summary.json")
    tracker.end_run(parent, status, tags={
        "workbench.finished": str(summary.finished), "workbench.failed": str(summary.failed),
        "workbench.blocked": str(summary.blocked), "workbench.skipped": str(summary.skipped),
        **({"workbench.status_reason": reason} if reason else {})})


def count_outcome(summary: RunSummary, status: str) -> None:
    if status == "FINISHED":
        summary.finished += 1
    elif status == "BLOCKED":
        summary.blocked += 1
    else:
        summary.failed += 1


def _execute(plan: Plan, logger: BackgroundLogger, summary: RunSummary, retry: RetryPolicy,
             bar: _Progress) -> None:
    by_backend: dict[str, list[list[GenerationRequest]]] = {}
    for batch in plan.batches:
        by_backend.setdefault(batch[0].backend, []).append(batch)
    stop = threading.Event()

    def record(results: list[GenerationResult]) -> None:
        for result in results:
            count_outcome(summary, result.status)
            logger.submit(result)
        bar.advance(len(results), summary)
        if logger.store_failed.is_set():
            raise TrackingError(f"the tracking store at {logger.tracker.display_uri} stopped taking writes; the "
                                f"finished images are saved in the local spool and are uploaded by the next "
                                f"`workbench run` of this spec")

    for name, batches in by_backend.items():
        backend = plan.backends[name]
        workers = max(1, backend.capabilities(batches[0][0].model).concurrency)
        call = lambda batch, b=backend: generate_with_retry(b, batch, retry, summary, stop)  # noqa: E731
        if workers == 1:
            for batch in batches:  # the GPU path: no threads between us and the device
                record(call(batch))
            continue
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"workbench-{name}") as pool:
            pending: set[Future[list[GenerationResult]]] = set()
            queue = list(batches)
            try:
                while queue or pending:
                    while queue and len(pending) < workers:
                        pending.add(pool.submit(call, queue.pop(0)))
                    finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    for future in finished:
                        record(future.result())  # a fatal BackendError propagates from here
            except BaseException:
                stop.set()
                for future in pending:
                    future.cancel()
                for future in pending:  # let in-flight calls finish and keep their images
                    if not future.cancelled():
                        try:
                            record(future.result())
                        except BaseException:
                            pass
                raise


class Counters(Protocol):
    """Where retries and OOM splits are counted: the RunSummary, or a Ray worker's per-batch tally."""

    retries: int
    oom_splits: int


def generate_with_retry(backend: Any, batch: list[GenerationRequest], retry: RetryPolicy,
                        summary: Counters, stop: threading.Event) -> list[GenerationResult]:
    """One batch, with bounded retries; out of memory halves the batch and goes on (recorded)."""
    try:
        return _generate_batch(backend, batch, retry, summary, stop)
    except OutOfMemoryError as exc:
        if len(batch) == 1:
            return _failures(batch, f"OutOfMemoryError: {exc} (even a batch of 1 does not fit)", "OutOfMemoryError")
        half = (len(batch) + 1) // 2
        summary.oom_splits += 1
        results = []
        for part in (batch[:half], batch[half:]):
            for result in generate_with_retry(backend, part, retry, summary, stop):
                note = f"out of memory at batch size {len(batch)}; generated in a batch of {len(part)}"
                results.append(dataclasses.replace(result, environment={**result.environment, "oom_split": note}))
        return results


def _generate_batch(backend: Any, batch: list[GenerationRequest], retry: RetryPolicy,
                    summary: Counters, stop: threading.Event) -> list[GenerationResult]:
    last: BackendError | None = None
    for attempt in range(retry.attempts):
        if stop.is_set():
            break
        try:
            results = backend.generate(batch)
            if len(results) != len(batch):
                raise BackendError(f"backend '{backend.name}' returned {len(results)} results for "
                                   f"{len(batch)} requests")
            # Which images shared a call: reproduce --exact-batch regenerates the whole batch.
            batch_id = uuid.uuid4().hex[:16]
            return [dataclasses.replace(r, environment=run_environment(
                r.environment, backend=backend.name, batch_size=len(batch), batch_index=index, batch_id=batch_id))
                for index, r in enumerate(results)]
        except OutOfMemoryError:
            raise
        except BackendError as exc:
            if exc.fatal:
                raise
            last = exc
            if not exc.retryable or attempt == retry.attempts - 1:
                break
            retry_after = getattr(exc, "retry_after", None)
            if retry_after is not None and retry_after > retry.max_delay_s:
                # Retrying before the server allows it only earns another 429: fail these, the next run resumes.
                return _failures(batch, f"{type(exc).__name__}: {exc} (the server asked to wait {retry_after:.0f} s "
                                        f"before retrying, more than the {retry.max_delay_s:.0f} s this sweep "
                                        f"waits; run the spec again later to generate these)", type(exc).__name__, exc)
            summary.retries += 1
            if stop.wait(retry.delay(attempt, retry_after)):
                break
        except WorkbenchError:
            raise
        except Exception as exc:  # a bug or an unexpected library error: fail this batch, keep the sweep
            return _failures(batch, f"{type(exc).__name__}: {exc}", type(exc).__name__)
    reason = f"{type(last).__name__}: {last}" if last else "stopped before this batch ran"
    if last is not None and attempt and last.retryable:
        reason += f" (after {attempt + 1} attempts)"
    return _failures(batch, reason, type(last).__name__ if last else "Stopped", last)


def _failures(batch: list[GenerationRequest], reason: str, error_type: str,
              error: BaseException | None = None) -> list[GenerationResult]:
    # The server's request id of the last failed call: what a support ticket about these runs needs.
    request_id = getattr(error, "request_id", None)
    ids = {"request_id": request_id} if request_id else {}
    return [GenerationFailure(request=r, reason=reason, error_type=error_type, backend_ids=ids) for r in batch]


def _touched(factor: str) -> set[str]:
    """The logged params a factor changes (so they are not held fixed in its grid)."""
    if factor in ("size", "width", "height"):
        return {"size", "width", "height"}
    if factor == "backend":
        return {"backend", "model"}
    if factor == "template" or factor.startswith("var."):
        return {factor, "negative_prompt"}
    return {factor}


def _write_grids(plan: Plan, tracker: Tracker, parent: str, grids_dir: Path | None) -> list[Path]:
    """One grid per factor (levels across, seeds down), plus the two-axis grid; logged to the parent."""
    keys = {r.run_key for r in plan.requests}
    records = [r for r in tracker.records(plan.experiment) if r.run_key in keys]
    if not records:
        return []
    base = request_params(plan.requests[0])
    jobs = [(factor, "seed", "size" if factor in ("width", "height") else factor) for factor in plan.spec.vary]
    if plan.spec.grid:
        rows, cols = plan.spec.grid.rows.factor, plan.spec.grid.cols.factor
        jobs.append((f"{rows}-x-{cols}", rows, cols))
    if not jobs:
        jobs.append(("base", "seed", "model"))  # no factor: the seeds of the one cell
    folder = (grids_dir or workbench_home() / "grids" / safe_name(plan.experiment)).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rows, cols in jobs:
        free = _touched(rows) | _touched(cols)
        where = {k: base[k] for k in varying_keys(records) if k not in free and k in base}
        title = f"{plan.experiment}: {cols} x {rows}"
        image, _ = grid_from_records(records, rows, cols, load_image=tracker.load_image, where=where, title=title,
                                     base=base)
        path = save_png_atomic(image, folder / f"grid-{safe_name(name)}.png")
        # Log this sweep's own bytes: a concurrent sweep of the same experiment may replace `path` next.
        tracker.log_png(parent, image, f"grids/{path.name}")
        written.append(path)
    return written


def _summary_dict(summary: RunSummary) -> dict[str, Any]:
    return {"experiment": summary.experiment, "parent_run_id": summary.parent_run_id, "planned": summary.planned,
            "skipped": summary.skipped, "finished": summary.finished, "failed": summary.failed,
            "blocked": summary.blocked, "not_run": summary.not_run, "retries": summary.retries,
            "oom_splits": summary.oom_splits,
            "log_failures": [f"{e.run_key}: {e.error}" for e in summary.log_failures],
            "spooled": [e.run_key for e in summary.spooled], "stopped": summary.stopped,
            "seconds": round(summary.seconds, 3), "grids": [str(p) for p in summary.grids]}


class _Progress:
    """A rich progress bar on stderr (quiet when disabled or not a terminal)."""

    def __init__(self, total: int, *, enabled: bool, description: str) -> None:
        self._progress = None
        if not enabled or total == 0:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

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


