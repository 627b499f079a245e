"""Run a plan's batches in this process: one backend call at a time on a device, a few at once for APIs.

A backend declares its ``concurrency``; 1 (a GPU) runs on this thread, with nothing between us and the
device; more (an API) runs that many calls on a thread pool. Results are counted and handed to the
background logger on this thread only. A fatal error stops new calls, lets the calls in flight finish
and keeps their images, then propagates.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from ..backends.base import Backend
from ..errors import TrackingError
from ..types import GenerationRequest
from .batch import BatchResult, run_batch
from .context import ExecutionContext

__all__ = ["execute_locally"]


def execute_locally(ctx: ExecutionContext) -> None:
    """Generate every batch of ``ctx.plan``; counts go into ``ctx.summary``, results to ``ctx.logger``."""
    by_backend: dict[str, list[list[GenerationRequest]]] = {}
    for batch in ctx.plan.batches:
        by_backend.setdefault(batch[0].backend, []).append(batch)
    for name, batches in by_backend.items():
        backend = ctx.plan.backends[name]
        workers = max(1, backend.capabilities(batches[0][0].model).concurrency)
        if workers == 1:
            for batch in batches:  # the GPU path: no threads between us and the device
                _record(ctx, run_batch(backend, batch, ctx.retry, ctx.stop))
        else:
            _on_a_pool(ctx, backend, batches, workers)


def _on_a_pool(ctx: ExecutionContext, backend: Backend, batches: list[list[GenerationRequest]],
               workers: int) -> None:
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"workbench-{backend.name}") as pool:
        pending: set[Future[BatchResult]] = set()
        queue = list(batches)
        try:
            while queue or pending:
                while queue and len(pending) < workers:
                    pending.add(pool.submit(run_batch, backend, queue.pop(0), ctx.retry, ctx.stop))
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in finished:
                    _record(ctx, future.result())  # a fatal BackendError propagates from here
        except BaseException:
            ctx.stop.set()
            for future in pending:
                future.cancel()
            for future in pending:  # let in-flight calls finish and keep their images
                if not future.cancelled():
                    try:
                        _record(ctx, future.result())
                    except BaseException:
                        pass
            raise


def _record(ctx: ExecutionContext, batch: BatchResult) -> None:
    ctx.count_batch(batch.retries, batch.oom_splits)
    ctx.record(batch.results)
    if ctx.logger.store_failed.is_set():
        raise TrackingError(f"the tracking store at {ctx.tracker.display_uri} stopped taking writes; the "
                            f"finished images are saved in the local spool and are uploaded by the next "
                            f"`workbench run` of this spec")
