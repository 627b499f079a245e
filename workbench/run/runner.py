"""The one orchestrator: plan → parent run → lease → an executor (local or Ray) → flush → grids → summary.

``run_experiment`` checks the store, plans, checks the backends can run (keys), cleans up after a
crashed run, and hands the plan to ``run_plan``. That makes the parent run, takes the experiment's writer
lease (``tracking/lease.py``: a second run of the experiment waits here, then does only what is left),
and gives the background logger and the progress bar to an executor in one ``ExecutionContext``; whatever
happens it flushes every finished image to the store (or the local spool) and ends the parent run (never
left RUNNING) before it returns. A run with nothing to generate leaves no parent run. Retries live in
``batch.py``; only the executors loop.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..config import workbench_home
from ..errors import BackendError, BudgetError, ScoringModelError, TrackingError
from ..evaluate.scoring import scoring_for
from ..experiments.spec import ExperimentSpec, load_spec
from ..grids.pivot import varying_keys
from ..grids.render import grid_from_records, safe_name, save_png_atomic
from ..hashing import canonical_json, content_hash
from ..prompts.templates import TemplateLibrary
from ..tracking.lease import Heartbeat, acquire_lease
from ..tracking.logger import BackgroundLogger
from ..tracking.schema import (
    BLOCKED_TAG,
    EXECUTOR_TAG,
    FAILED_TAG,
    FINISHED_TAG,
    HOST_TAG,
    MAX_TAG,
    PID_TAG,
    PLAN_ARTIFACT,
    SKIPPED_TAG,
    SPEC_ARTIFACT,
    SPEC_HASH_TAG,
    SPEC_TAG,
    STATUS_REASON_TAG,
    SUMMARY_ARTIFACT,
    RunRecord,
    request_params,
)
from ..tracking.spool import spool_dir, upload_spool
from ..tracking.store import Tracker
from .batch import RetryPolicy
from .context import OUTCOMES, ExecutionContext, ImageRun, ProgressBar, RunSummary
from .local_executor import execute_locally
from .plan import Plan, format_usd, make_plan
from .ray_executor import RayOptions, execute_on_ray, preflight

__all__ = ["run_experiment", "run_plan", "recover"]


def run_experiment(spec: ExperimentSpec | str | Path, *, tracking_uri: str | None = None,
                   experiment: str | None = None, max_cost: float | None = None, max_batch: int | None = None,
                   progress: bool = True, grids_dir: Path | None = None, make_grids: bool = True,
                   retry: RetryPolicy | None = None, library: TemplateLibrary | None = None,
                   ray: RayOptions | None = None, clip: str | None = None,
                   on_wait: Callable[[str], None] | None = None,
                   on_warning: Callable[[str], None] | None = None) -> RunSummary:
    """Run every image of ``spec`` that is not already logged, and log each one to MLflow with its scores
    (image statistics; adherence on the shapes model; a CLIP score under ``clip`` or the spec's
    ``evaluate.clip``). While another run generates into the same experiment, this one waits for it (and
    says so through ``on_wait``, by default on stderr when ``progress``), then does what is left. The plan's
    warnings (what ``workbench plan`` prints: a level equal to the base, what a backend says) go to
    ``on_warning`` once the plan is made.

    Example:
        >>> summary = run_experiment("experiments/quickstart.yaml", progress=False)  # doctest: +SKIP
        >>> summary.finished, summary.grids, summary.runs[0].run_id  # doctest: +SKIP
    """
    spec_text = None
    if not isinstance(spec, ExperimentSpec):
        spec_text = Path(spec).read_text(encoding="utf-8") if Path(spec).is_file() else None
        spec = load_spec(spec)
    tracker = Tracker(tracking_uri)
    exists = tracker.exists()  # a local store not made yet holds nothing: made only once every check passed
    if exists:
        tracker.check()  # before anything is generated
    plan = make_plan(spec, tracker=tracker if exists else None, experiment=experiment, library=library,
                     max_batch=max_batch, clip=clip)
    if max_cost is not None and plan.est_cost > max_cost:
        estimate, limit = format_usd(plan.est_cost), format_usd(max_cost)
        if estimate == limit:  # never "$0.0012 over $0.0012": as many figures as it takes to differ
            estimate, limit = format_usd(plan.est_cost, digits=8), format_usd(max_cost, digits=8)
        raise BudgetError(f"the plan is estimated at {estimate}, over --max-cost {limit}; "
                          f"reduce the sweep or raise the budget")
    _preflight(plan)  # a key not set is bad input: refused before anything is written
    for warning in plan.warnings if on_warning is not None else ():  # after the refusals, which say it all
        on_warning(warning)
    if not exists:
        tracker.check()  # creates the store (or says which folder is not writable)
    # After the checks, since it writes: spooled images uploaded, dead runs marked. run_plan reads what is
    # finished again once it holds the experiment, so the uploaded images are skipped.
    recover(tracker, plan.experiment)
    return run_plan(plan, tracker, spec_text=spec_text, progress=progress, grids_dir=grids_dir,
                    make_grids=make_grids, retry=retry, ray=ray, on_wait=on_wait)


def recover(tracker: Tracker, experiment: str) -> tuple[int, int]:
    """Clean up after a crashed run: upload spooled images, mark dead processes' runs KILLED."""
    uploaded = upload_spool(tracker)
    experiment_id = tracker.experiment_id(experiment, create=False)
    reaped = tracker.reap_stale_runs(experiment_id) if experiment_id else 0
    return uploaded, reaped


def _preflight(plan: Plan) -> None:
    """Each backend checks it can work at all (keys, extras) before anything is written."""
    for name, backend in plan.backends.items():
        backend.preflight({r.model for r in plan.todo if r.backend == name})


def run_plan(plan: Plan, tracker: Tracker, *, spec_text: str | None = None, progress: bool = True,
             grids_dir: Path | None = None, make_grids: bool = True, retry: RetryPolicy | None = None,
             ray: RayOptions | None = None, on_wait: Callable[[str], None] | None = None) -> RunSummary:
    """Execute a plan made by ``make_plan`` (see ``run_experiment``); on a Ray cluster when ``ray`` is given."""
    started = time.perf_counter()
    _preflight(plan)
    if ray is not None:
        preflight(tracker, ray)
    # Scores are computed on the logging threads (the Ray workers score their own batches); a CLIP model
    # that is not there fails here, before anything is generated.
    scoring = scoring_for(plan.scoring)
    if ray is None:
        scoring.load()
    else:
        scoring.check()
    experiment_id = tracker.experiment_id(plan.experiment)
    assert experiment_id is not None
    if not plan.todo:  # a re-run with nothing to do leaves no trace in the store (see _nothing_to_do)
        return _nothing_to_do(plan, tracker, experiment_id, started, grids_dir, make_grids)
    spec_dump = spec_text or yaml.safe_dump(plan.spec.model_dump(exclude_defaults=True), sort_keys=False)
    parent = tracker.start_parent(
        experiment_id, name=f"{plan.spec.name} {time.strftime('%Y-%m-%d %H:%M:%S')}",
        tags={SPEC_TAG: plan.spec.name, SPEC_HASH_TAG: content_hash(spec_dump),
              EXECUTOR_TAG: "local" if ray is None else f"ray ({ray.address or 'local cluster'})"})
    heartbeat = Heartbeat(tracker, parent)
    waited_for: list[str] = []

    def waiting(holder: RunRecord) -> None:
        waited_for.append(holder.run_id)
        message = (f"another run is generating into experiment '{plan.experiment}' (parent run {holder.run_id}, "
                   f"pid {holder.tags.get(PID_TAG, '?')} on {holder.tags.get(HOST_TAG, '?')}): waiting for it "
                   f"to end, then doing what is left (Ctrl-C to stop)")
        if on_wait is not None:
            on_wait(message)
        elif progress:
            print(message, file=sys.stderr, flush=True)

    try:
        acquire_lease(tracker, experiment_id, parent, on_wait=waiting)
        # Read what is finished again now that no other run writes here: a run that ended while this one
        # planned or waited (or the spool just uploaded) has done part of the plan.
        plan = plan.with_done(tracker.finished_keys(plan.experiment))
    except BaseException as exc:
        heartbeat.stop()
        if isinstance(exc, KeyboardInterrupt):  # stopped while waiting: nothing was attempted, leave no trace
            tracker.delete_run(parent)
        else:
            _end_failed(tracker, parent, "FAILED", f"unexpected {type(exc).__name__}: {str(exc)[:500]}")
        raise
    if not plan.todo:
        # The other run did it all. The parent was only the claim: delete it, as for any run that
        # generated nothing (a user looking at the experiment wants the runs that made images).
        heartbeat.stop()
        tracker.delete_run(parent)
        summary = _nothing_to_do(plan, tracker, experiment_id, started, grids_dir, make_grids)
        summary.waited_for = waited_for[0] if waited_for else None
        return summary
    try:
        summary = _execute(plan, tracker, experiment_id, parent, scoring, spec_dump, started, grids_dir,
                           make_grids, retry, ray, progress)
    finally:
        heartbeat.stop()
    summary.waited_for = waited_for[0] if waited_for else None
    return summary


def _execute(plan: Plan, tracker: Tracker, experiment_id: str, parent: str, scoring: Any, spec_dump: str,
             started: float, grids_dir: Path | None, make_grids: bool, retry: RetryPolicy | None,
             ray: RayOptions | None, progress: bool) -> RunSummary:
    """Generate under the parent run; whatever happens, flush every finished image and end the parent."""
    summary = RunSummary(experiment=plan.experiment, experiment_id=experiment_id, parent_run_id=parent,
                         tracking_uri=tracker.display_uri, planned=plan.total_images, skipped=len(plan.done))
    status, reason = "FINISHED", None
    ctx: ExecutionContext | None = None
    try:
        tracker.log_parent_details(
            parent,
            params={"backend": plan.spec.backend, "model": plan.spec.model, "template": plan.spec.template or "",
                    "seeds": len(plan.spec.seeds), "factors": ",".join(plan.spec.vary) or "(none)",
                    "images": plan.total_images, "skipped": len(plan.done), **scoring.parent_params()},
            texts={SPEC_ARTIFACT: spec_dump, PLAN_ARTIFACT: canonical_json(plan.to_dict())})
        ctx = ExecutionContext(
            plan=plan, tracker=tracker, experiment_id=experiment_id, parent_run_id=parent, summary=summary,
            retry=retry or RetryPolicy(),
            progress=ProgressBar(len(plan.todo), enabled=progress, description=plan.spec.name),
            logger=BackgroundLogger(tracker, experiment_id, parent, experiment=plan.experiment,
                                    prepare=scoring.prepare, extra_tags=scoring.run_tags()))
        if ray is None:
            execute_locally(ctx)
        else:
            execute_on_ray(ctx, ray)
    except KeyboardInterrupt:
        status, reason = "KILLED", "interrupted (Ctrl-C): finished images were kept; run again to resume"
        summary.stopped = reason
    # fatal: auth, quota, missing dependency, store gone, a CLIP model a Ray worker could not load
    except (BackendError, TrackingError, ScoringModelError) as exc:
        status, reason = "FAILED", f"{type(exc).__name__}: {exc}"
        summary.stopped = reason
    except BaseException as exc:  # a bug: the parent run says so (not FINISHED), and the traceback goes on up
        status, reason = "FAILED", f"unexpected {type(exc).__name__}: {str(exc)[:500]}"
        summary.stopped = reason
        raise
    finally:
        try:
            if ctx is not None:
                ctx.progress.close()
                summary.add_logged(ctx.logger.close())  # flush: every finished image reaches the store (or spool)
            summary.runs = _image_runs(plan, summary)
            summary.not_run = summary.planned - summary.skipped - summary.logged
            summary.seconds = time.perf_counter() - started
            if summary.spooled:
                summary.spool_dir = spool_dir(tracker.uri)
            if summary.spooled or summary.log_failures:
                first = (summary.spooled + summary.log_failures)[0].error or "no error recorded"
                summary.stopped = summary.stopped or f"the tracking store stopped taking writes (first error: {first})"
                # the store is gone: the next run marks this parent KILLED (its process is gone by then)
            else:
                _finish_parent(plan, tracker, parent, summary, status, reason, grids_dir, make_grids)
        except BaseException as exc:  # ending the sweep failed: the parent must still not stay RUNNING
            _end_failed(tracker, parent, "FAILED", reason or f"unexpected {type(exc).__name__}: {str(exc)[:500]}")
            raise
    return summary


def _end_failed(tracker: Tracker, parent: str, status: str, reason: str) -> None:
    """End a parent run that could not be ended the normal way, with the reason; quietly if the store is gone."""
    try:
        tracker.end_run(parent, status, tags={STATUS_REASON_TAG: reason[:MAX_TAG]})
    except Exception:  # the store itself failed: the next run reaps it (KILLED, its process gone)
        pass


def _nothing_to_do(plan: Plan, tracker: Tracker, experiment_id: str, started: float, grids_dir: Path | None,
                   make_grids: bool) -> RunSummary:
    """The summary of a run with nothing left to generate: no parent run (it would only clutter the
    experiment in the MLflow UI with a run that made nothing); the grids are written to disk again."""
    summary = RunSummary(experiment=plan.experiment, experiment_id=experiment_id, parent_run_id=None,
                         tracking_uri=tracker.display_uri, planned=plan.total_images, skipped=len(plan.done))
    summary.runs = _image_runs(plan, summary)
    if make_grids and summary.skipped:
        summary.grids = _write_grids(plan, tracker, None, grids_dir)
    summary.seconds = time.perf_counter() - started
    return summary


def _image_runs(plan: Plan, summary: RunSummary) -> list[ImageRun]:
    """Every image of the plan that has a run (skipped, generated, failed, blocked), in plan order."""
    logged = {entry.run_key: entry for entry in summary.logged_runs}
    runs = []
    for request in plan.requests:
        cell = f"{request.factor}={request.level}" if request.factor else "base"
        if request.run_key in plan.done:
            runs.append(ImageRun(plan.done[request.run_key], request.run_key, "skipped", cell, request.seed))
        elif request.run_key in logged:
            entry = logged[request.run_key]
            runs.append(ImageRun(entry.run_id, request.run_key, OUTCOMES.get(entry.status, "failed"), cell,
                                 request.seed, entry.reason))
    return runs


def _finish_parent(plan: Plan, tracker: Tracker, parent: str, summary: RunSummary, status: str, reason: str | None,
                   grids_dir: Path | None, make_grids: bool) -> None:
    if make_grids and summary.logged + summary.skipped:
        summary.grids = _write_grids(plan, tracker, parent, grids_dir)
    tracker.log_text(parent, canonical_json(_summary_dict(summary)), SUMMARY_ARTIFACT)
    tracker.end_run(parent, status, tags={
        FINISHED_TAG: str(summary.finished), FAILED_TAG: str(summary.failed), BLOCKED_TAG: str(summary.blocked),
        SKIPPED_TAG: str(summary.skipped), **({STATUS_REASON_TAG: reason} if reason else {})})


def _touched(factor: str) -> set[str]:
    """The logged params a factor changes (so they are not held fixed in its grid)."""
    if factor in ("size", "width", "height"):
        return {"size", "width", "height"}
    if factor == "backend":
        return {"backend", "model"}
    if factor == "template" or factor.startswith("var."):
        return {factor, "negative_prompt"}
    return {factor}


def _write_grids(plan: Plan, tracker: Tracker, parent: str | None, grids_dir: Path | None) -> list[Path]:
    """One grid per factor (levels across, seeds down), plus the two-axis grid; logged to the parent (if any)."""
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
        if parent is not None:
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
