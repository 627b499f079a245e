"""Reproduce a past generation from its MLflow run id or from the PNG alone, and prove it.

``reproduce(source)`` rebuilds the request (``origin.load_origin``: the run's ``request.json``, the PNG's
``workbench`` chunk, or another tool's metadata: an A1111 ``parameters`` text, a ComfyUI graph, InvokeAI's), regenerates it on the same backend, and compares
pixels with the original (``report.compare_images``): bit-exact, or the largest difference, the fraction
of pixels that differ and the PSNR, plus the environment fields (library versions, device, dtype,
weights...) that differ.

Bit-exact holds only for the same batch shape, hardware, library versions and kernels. So by default an
image made in a batch is regenerated with its whole batch (every run logged with the same
``workbench.batch_id``), in one backend call, in the original order, when the store holds that batch; else
alone, and the report says why. ``exact_batch=False`` regenerates it alone; ``exact_batch=True`` insists on
the whole batch (an error when it cannot be rebuilt).

Example:
    >>> report = reproduce("3f2a9c0d1e8b4f6a9d7c5b3a1e0f2d4c")  # doctest: +SKIP
    >>> report.bit_exact, report.verdict  # doctest: +SKIP
    (True, 'bit-exact')
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..backends.base import Backend
from ..backends.registry import get_backend
from ..config import is_local_sqlite
from ..errors import (
    BackendError,
    NotReproducibleError,
    ReproductionFailedError,
    StoreNotFoundError,
    TrackingError,
    UnknownRunError,
    UserInputError,
)
from ..evaluate.image_stats import image_statistics
from ..provenance.environment import diff_environments, run_environment
from ..provenance.png import jsonable
from ..tracking.schema import (
    EXACT_BATCH_TAG,
    REPRODUCES_FILE_TAG,
    REPRODUCES_TAG,
    REPRODUCTION_SOURCE_TAG,
    REPRODUCTION_VERDICT_TAG,
)
from ..tracking.store import Tracker
from ..types import GeneratedImage, GenerationFailure, GenerationRequest
from .origin import Origin, batch_requests, batch_store, load_origin
from .report import ReproductionReport, compare_images

__all__ = ["reproduce", "REPRODUCTIONS_EXPERIMENT"]

# Where reproductions of loose PNGs go when their original run is not in the store.
REPRODUCTIONS_EXPERIMENT = "reproductions"
# Fingerprint fields that identify a call, not a setup: never reported as differences.
_CALL_FIELDS = {"batch_id"}


def _backend(backend: Backend | str | None, request: GenerationRequest) -> tuple[Backend, GenerationRequest]:
    if isinstance(backend, Backend):
        return backend, request
    name = backend or request.backend
    return get_backend(name), request if name == request.backend else request.replace(backend=name)


def _fingerprint(env: Mapping[str, Any], batch: tuple[int, int] | None) -> dict[str, Any]:
    """What is compared: the environment and the batch position (size, index), without call ids."""
    position = {"batch_size": batch[0], "batch_index": batch[1]} if batch else {}
    return {k: v for k, v in jsonable({**env, **position}).items() if k not in _CALL_FIELDS}


def reproduce(source: str | Path, *, tracking_uri: str | None = None, exact_batch: bool | None = None,
              log: bool = True, backend: Backend | str | None = None,
              model: str | None = None) -> ReproductionReport:
    """Regenerate the image of ``source`` (an MLflow run id or a PNG path) and compare it with the original.

    ``exact_batch``: ``None`` (the default) regenerates the whole batch the image was made in, in one backend
    call, so the image can be bit-exact where hardware and versions match, when the store holds that batch
    and the backend honours seeds; else the image alone, with a note saying why. ``False`` regenerates it
    alone; ``True`` requires the whole batch (``NotReproducibleError`` when it cannot be rebuilt).
    ``log`` records the reproduction as a new run in the original's experiment
    (``workbench.kind=reproduction``, ``workbench.reproduces=<run id>``) with the report as an artifact.
    ``backend`` replaces the request's backend (a name, or a configured ``Backend`` instance); ``model``
    replaces its model (needed for A1111 files naming a checkpoint we cannot load). Raises ``UserInputError`` subclasses for a bad source.

    Example:
        >>> report = reproduce("out/image.png", log=False)  # doctest: +SKIP
        >>> print(report.to_text())  # doctest: +SKIP
    """
    # Only logging the reproduction of a file may make a store: a run id must be in one that exists.
    tracker = Tracker(tracking_uri, create=log and Path(str(source)).is_file())
    backend_name = backend if isinstance(backend, str) else None
    origin = load_origin(source, tracker, model, backend_name)
    engine, request = _backend(backend, origin.request)
    notes = list(origin.notes)
    switched = request.backend != origin.request.backend
    if switched:
        notes.append(f"regenerated on backend '{request.backend}', not the original '{origin.request.backend}'")
    origin.request = request
    engine.preflight({request.model})
    try:
        engine.validate(request)
    except UserInputError as exc:
        hint = "; pass --model (model=...) with a model this backend can load" if origin.foreign else ""
        raise type(exc)(f"{exc}{hint}") from None
    current = engine.model_hash(request.model)
    if model or switched or origin.foreign:
        request = origin.request = request.replace(model_hash=current)  # other weights: their own identity
    elif request.model_hash and current and current != request.model_hash:
        notes.append(f"the weights of '{request.model}' changed since the original (hash {request.model_hash} → "
                     f"{current}): expect a different image")
    caps = engine.capabilities(request.model)
    seed_controlled = caps.seeds and request.seed is not None
    if not seed_controlled:
        why = "has no seed" if request.seed is None else f"'{engine.name}' does not honour seeds"
        notes.append(f"the request {why}: it cannot be reproduced exactly; this is a fresh draw from the same "
                     f"request")

    requests, where, alone_why = [request], 0, None
    if origin.batch and origin.batch[0] > 1:
        if exact_batch is False:
            alone_why = "as asked (--alone)"
        elif exact_batch is None and not seed_controlled:
            alone_why = "because the backend does not honour seeds (the batch shape cannot make it exact)"
        else:
            try:
                requests, where, batch_notes = _whole_batch(tracker, origin, tracking_uri)
                notes += batch_notes
                requests = [r.replace(backend=request.backend) for r in requests]
            except (NotReproducibleError, TrackingError, StoreNotFoundError) as exc:
                if exact_batch:
                    raise
                alone_why = f"because its batch cannot be rebuilt: {exc}"
    results = engine.generate(requests)
    if len(results) != len(requests):
        raise BackendError(f"backend '{engine.name}' returned {len(results)} results for {len(requests)} requests")
    result = results[where]
    if isinstance(result, GenerationFailure):
        raise ReproductionFailedError(f"the backend gave no image for the reproduced request ({result.status}): "
                                      f"{result.reason}")
    assert isinstance(result, GeneratedImage)

    comparison = compare_images(origin.image, result.image)
    if origin.batch and origin.batch[0] != len(requests) and not comparison["bit_exact"]:
        notes.append(f"the original was image {origin.batch[1] + 1} of a batch of {origin.batch[0]}; it was "
                     f"regenerated in a batch of {len(requests)}. A different batch shape can change pixels "
                     f"slightly (often by one 8-bit level)")
    original_env = _fingerprint(origin.environment, origin.batch)
    result = dataclasses.replace(result, batch_size=len(requests), batch_index=where,
                                 environment=run_environment(result.environment, backend=engine.name))
    new_env = _fingerprint(result.environment, (len(requests), where))
    env_diff = diff_environments(original_env, new_env) if not origin.foreign else {}
    info_diff = diff_environments(original_env, new_env, informational=True) if not origin.foreign else {}
    report = ReproductionReport(
        source=str(source), source_kind=origin.kind, request=request, original_run_id=origin.run_id,
        tracking_uri=tracker.display_uri if (origin.kind == "run" or log or len(requests) > 1) else None,
        seed_controlled=seed_controlled, exact_batch=len(requests) > 1, alone_why=alone_why,
        original_batch_size=origin.batch[0] if origin.batch else None,
        original_batch_index=origin.batch[1] if origin.batch else None,
        batch_size=len(requests), batch_index=where, environment_diff=env_diff, informational_diff=info_diff,
        original_environment=original_env, environment=new_env, notes=notes, image=result.image,
        original_image=origin.image, **comparison)
    if log:
        _log(tracker, report, origin, result, source)
    return report


def _whole_batch(tracker: Tracker, origin: Origin, tracking_uri: str | None
                 ) -> tuple[list[GenerationRequest], int, list[str]]:
    """The original batch's requests (``batch_requests``), read from the store that holds them."""
    store = batch_store(tracker, origin, tracking_uri)
    if is_local_sqlite(store.uri) and not Path(store.uri[len("sqlite:///"):]).is_file():
        # a PNG needs no store: do not create an empty one only to find its batch missing
        raise NotReproducibleError(f"the other images of the batch are in an MLflow store, and there is none at "
                                   f"{store.display_uri}; pass --tracking-uri for the store it was logged to")
    requests, where, notes = batch_requests(store, origin)
    if store is not tracker:
        notes.insert(0, f"the other images of the batch were read from {store.display_uri}, the store the PNG "
                        f"names")
    return requests, where, notes


def _log(tracker: Tracker, report: ReproductionReport, origin: Origin, result: GeneratedImage,
         source: str | Path) -> None:
    tracker.check()
    experiment_id = origin.run.experiment_id if origin.run is not None else None
    if experiment_id is None and origin.run_id:
        try:
            experiment_id = tracker.run(origin.run_id).experiment_id
        except UnknownRunError:
            experiment_id = None
    if experiment_id is None:
        experiment_id = tracker.experiment_id(REPRODUCTIONS_EXPERIMENT)
    assert experiment_id is not None
    tags = {REPRODUCTION_SOURCE_TAG: origin.kind, REPRODUCTION_VERDICT_TAG: report.verdict,
            EXACT_BATCH_TAG: str(report.exact_batch).lower()}
    if origin.run_id:
        tags[REPRODUCES_TAG] = origin.run_id
    else:
        tags[REPRODUCES_FILE_TAG] = Path(str(source)).name[:250]
    metrics = {"bit_exact": float(report.bit_exact)}
    if report.max_abs_diff is not None:
        metrics["max_abs_diff"] = float(report.max_abs_diff)
        metrics["fraction_differing"] = float(report.fraction_differing or 0.0)
    if report.psnr is not None and math.isfinite(report.psnr):
        metrics["psnr_db"] = report.psnr
    metrics.update(image_statistics(result.image))  # as on the original run: they compare metric by metric
    run_id = tracker.log_reproduction(experiment_id, result, tags=tags, metrics=metrics,
                                      name=f"reproduce {origin.run_id or Path(str(source)).name}"[:250])
    report.reproduction_run_id = run_id
    tracker.log_text(run_id, report.to_json(), "reproduction.json")
    tracker.log_text(run_id, report.to_text() + "\n", "reproduction.txt")
