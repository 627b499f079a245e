"""One batch through its backend: the retry and out-of-memory policy both executors use.

Retryable backend errors (429, 5xx, timeouts) are retried a bounded number of times with backoff that
honours Retry-After; fatal ones (auth, quota) propagate and stop the sweep; anything else fails just
this batch. Out of device memory halves the batch and goes on. Every result leaves here with its batch
position (size, index, and the id shared by one backend call), the one place that knows it.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import uuid
from dataclasses import dataclass, field

from ..backends.base import Backend
from ..errors import BackendError, OutOfMemoryError, WorkbenchError
from ..provenance.environment import run_environment
from ..types import GenerationFailure, GenerationRequest, GenerationResult

__all__ = ["RetryPolicy", "BatchResult", "run_batch", "failures"]


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
class BatchResult:
    """A batch's results, in request order, and what it took: counted by the executor's own thread."""

    results: list[GenerationResult] = field(default_factory=list)
    retries: int = 0
    oom_splits: int = 0  # halvings after running out of device memory


def run_batch(backend: Backend, batch: list[GenerationRequest], retry: RetryPolicy,
              stop: threading.Event) -> BatchResult:
    """Generate one batch with bounded retries; out of memory halves the batch and goes on (recorded)."""
    tally = BatchResult()
    tally.results = _split_on_oom(backend, batch, retry, stop, tally)
    return tally


def _split_on_oom(backend: Backend, batch: list[GenerationRequest], retry: RetryPolicy, stop: threading.Event,
                  tally: BatchResult, failed_at: tuple[int, ...] = ()) -> list[GenerationResult]:
    """Run ``batch``, halving it while the device runs out of memory; ``failed_at``: the sizes that did."""
    try:
        results = _with_retries(backend, batch, retry, stop, tally)
    except OutOfMemoryError as exc:
        if len(batch) > 1:
            half = (len(batch) + 1) // 2
            tally.oom_splits += 1
            return [result for part in (batch[:half], batch[half:])
                    for result in _split_on_oom(backend, part, retry, stop, tally, (*failed_at, len(batch)))]
        results = failures(batch, f"OutOfMemoryError: {exc} (even a batch of 1 does not fit)", "OutOfMemoryError")
    if not failed_at:
        return results
    note = f"out of memory at batch size {', then '.join(map(str, failed_at))}; generated in a batch of {len(batch)}"
    return [dataclasses.replace(r, environment={**r.environment, "oom_split": note}) for r in results]


def _with_retries(backend: Backend, batch: list[GenerationRequest], retry: RetryPolicy, stop: threading.Event,
                  tally: BatchResult) -> list[GenerationResult]:
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
            return [dataclasses.replace(r, batch_size=len(batch), batch_index=index, batch_id=batch_id,
                                        environment=run_environment(r.environment, backend=backend.name))
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
                return failures(batch, f"{type(exc).__name__}: {exc} (the server asked to wait {retry_after:.0f} s "
                                       f"before retrying, more than the {retry.max_delay_s:.0f} s this sweep "
                                       f"waits; run the spec again later to generate these)", type(exc).__name__, exc)
            tally.retries += 1
            if stop.wait(retry.delay(attempt, retry_after)):
                break
        except WorkbenchError:
            raise
        except Exception as exc:  # a bug or an unexpected library error: fail this batch, keep the sweep
            return failures(batch, f"{type(exc).__name__}: {exc}", type(exc).__name__)
    reason = f"{type(last).__name__}: {last}" if last else "stopped before this batch ran"
    if last is not None and attempt and last.retryable:
        reason += f" (after {attempt + 1} attempts)"
    return failures(batch, reason, type(last).__name__ if last else "Stopped", last)


def failures(batch: list[GenerationRequest], reason: str, error_type: str,
             error: BaseException | None = None) -> list[GenerationResult]:
    """One failure per request of ``batch``, each at its position in the batch."""
    # The server's request id of the last failed call: what a support ticket about these runs needs.
    request_id = getattr(error, "request_id", None)
    ids = {"request_id": request_id} if request_id else {}
    return [GenerationFailure(request=r, reason=reason, error_type=error_type, backend_ids=ids,
                              batch_size=len(batch), batch_index=index) for index, r in enumerate(batch)]
