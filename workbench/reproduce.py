"""Reproduce a past generation from its MLflow run id or from the PNG alone, and prove it.

``reproduce(source)`` rebuilds the request (the run's ``request.json``, the PNG's ``workbench`` chunk,
or an A1111 ``parameters`` text), regenerates it on the same backend, and compares pixels with the
original: bit-exact, or the largest difference, the fraction of pixels that differ and the PSNR, plus
the environment fields (library versions, device, dtype, weights...) that differ.

Bit-exact holds only for the same batch shape, hardware, library versions and kernels. By default the
image is regenerated alone; ``exact_batch=True`` regenerates the whole batch it was made in (every run
logged with the same ``workbench.batch_id``), in one backend call, in the original order.

Example:
    >>> report = reproduce("3f2a9c0d1e8b4f6a9d7c5b3a1e0f2d4c")  # doctest: +SKIP
    >>> report.bit_exact, report.verdict  # doctest: +SKIP
    (True, 'bit-exact')
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .backends.base import Backend
from .backends.registry import get_backend
from .provenance.environment import diff_environments, run_environment
from .errors import (BackendError, MetadataError, NotReproducibleError, ReproductionFailedError, UnknownRunError,
                     UserInputError, WorkbenchError)
from .hashing import canonical_json
from .provenance.a1111 import unused_a1111_keys
from .provenance.png import jsonable, read_png_metadata
from .tracking import IMAGE_ARTIFACT, KIND_TAG, Tracker
from .types import GeneratedImage, GenerationFailure, GenerationRequest

if TYPE_CHECKING:
    from mlflow.entities import Run
    from PIL import Image

__all__ = ["reproduce", "ReproductionReport", "compare_images", "UnknownRunError", "NotReproducibleError",
           "ReproductionFailedError", "REPRODUCTIONS_EXPERIMENT"]

# Where reproductions of loose PNGs go when their original run is not in the store.
REPRODUCTIONS_EXPERIMENT = "reproductions"
BATCH_TAG = "workbench.batch_id"
REPRODUCES_TAG = "workbench.reproduces"
# Fingerprint fields that identify a call, not a setup: never reported as differences.
_CALL_FIELDS = {"batch_id"}
_RUN_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class ReproductionReport:
    """What a reproduction found. ``to_text()`` for people, ``to_dict()`` / ``to_json()`` for machines."""

    source: str
    source_kind: str  # "run", "png" (workbench chunk) or "a1111" (parameters text only)
    request: GenerationRequest
    original_run_id: str | None
    tracking_uri: str | None
    seed_controlled: bool
    exact_batch: bool
    original_batch_size: int | None  # None where unknown (A1111 files)
    original_batch_index: int | None
    batch_size: int  # of the reproduction's backend call
    batch_index: int
    size_matches: bool
    bit_exact: bool
    max_abs_diff: int | None  # 0..255, None when the sizes differ
    fraction_differing: float | None  # of pixels with any channel different
    psnr: float | None  # dB; inf when identical
    environment_diff: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # fields that can change pixels
    informational_diff: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # workbench, git, batch position
    original_environment: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    reproduction_run_id: str | None = None
    image: Image.Image | None = field(default=None, repr=False, compare=False)
    original_image: Image.Image | None = field(default=None, repr=False, compare=False)

    @property
    def verdict(self) -> str:
        """``bit-exact`` or ``differs: max diff N, PSNR x dB, fraction y``."""
        if self.bit_exact:
            return "bit-exact"
        if not self.size_matches:
            size = f"{self.image.width}x{self.image.height}" if self.image is not None else "?"
            original = f"{self.original_image.width}x{self.original_image.height}" if self.original_image else "?"
            return f"differs: size {size} vs {original} in the original"
        return (f"differs: max diff {self.max_abs_diff}, PSNR {self.psnr:.2f} dB, "
                f"fraction {self.fraction_differing:.4f}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "source_kind": self.source_kind, "original_run_id": self.original_run_id,
            "reproduction_run_id": self.reproduction_run_id, "tracking_uri": self.tracking_uri,
            "verdict": self.verdict, "bit_exact": self.bit_exact, "size_matches": self.size_matches,
            "max_abs_diff": self.max_abs_diff, "fraction_differing": self.fraction_differing,
            # null when identical (infinite PSNR): JSON has no infinity
            "psnr_db": self.psnr if self.psnr is not None and math.isfinite(self.psnr) else None,
            "seed_controlled": self.seed_controlled, "exact_batch": self.exact_batch,
            "original_batch": {"size": self.original_batch_size, "index": self.original_batch_index},
            "reproduction_batch": {"size": self.batch_size, "index": self.batch_index},
            "run_key": self.request.run_key, "request": self.request.to_dict(),
            "environment_diff": {k: {"original": a, "reproduction": b}
                                 for k, (a, b) in self.environment_diff.items()},
            "informational_diff": {k: {"original": a, "reproduction": b}
                                   for k, (a, b) in self.informational_diff.items()},
            "notes": list(self.notes), "original_environment": self.original_environment,
            "environment": self.environment,
        }

    def to_json(self) -> str:
        return json.dumps(jsonable(self.to_dict()), indent=2, ensure_ascii=False)

    def to_text(self) -> str:
        r = self.request
        origin = {"run": f"run {self.original_run_id}", "png": f"{self.source}",
                  "a1111": f"{self.source} (A1111 parameters)"}[self.source_kind]
        if self.source_kind == "png" and self.original_run_id:
            origin += f" (run {self.original_run_id})"
        seed = r.seed if r.seed is not None else "none"
        lines = [
            f"reproduction of {origin}",
            f"  request:      {r.backend}:{r.model}, seed {seed}, {r.width}x{r.height}, {r.steps} steps, "
            f"guidance {float(r.guidance):g}, scheduler {r.scheduler or 'default'}",
            f"  prompt:       {_short(r.prompt)}",
        ]
        if r.negative_prompt:
            lines.append(f"  negative:     {_short(r.negative_prompt)}")
        if self.original_batch_size is not None:
            how = "with its whole batch" if self.exact_batch and self.batch_size > 1 else "alone"
            lines.append(f"  batch:        original image {self.original_batch_index + 1} of "
                         f"{self.original_batch_size}; regenerated {how} (image {self.batch_index + 1} of "
                         f"{self.batch_size})")
        lines.append(f"  verdict:      {self.verdict}")
        if not self.seed_controlled:
            lines.append("  seed:         not controlled by the backend: this cannot be reproduced exactly")
        if self.source_kind == "a1111":
            lines.append("  environment:  not recorded in the file (A1111 parameters only)")
        elif self.environment_diff:
            lines.append(f"  environment:  {len(self.environment_diff)} field(s) differ")
            for key, (old, new) in self.environment_diff.items():
                lines.append(f"    {key}: {_short(_show(old), 50)} → {_short(_show(new), 50)}")
        else:
            lines.append("  environment:  the same libraries, device, dtype, model and scheduler")
        if self.source_kind != "a1111" and self.informational_diff:
            lines.append("  also differ:  " + "; ".join(
                f"{key} {_short(_show(old), 40)} → {_short(_show(new), 40)}"
                for key, (old, new) in self.informational_diff.items()))
        if self.reproduction_run_id:
            lines.append(f"  logged as:    run {self.reproduction_run_id} ({REPRODUCES_TAG}="
                         f"{self.original_run_id or '-'})")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return "\n".join(lines)


def compare_images(original: Image.Image, new: Image.Image) -> dict[str, Any]:
    """Pixel comparison: ``size_matches``, ``bit_exact``, ``max_abs_diff`` (0–255), ``fraction_differing``
    (pixels with any channel different) and ``psnr`` in dB (inf when identical).

    >>> from PIL import Image
    >>> compare_images(Image.new("RGB", (2, 2)), Image.new("RGB", (2, 2), (0, 0, 4)))["max_abs_diff"]
    4
    """
    if original.size != new.size:
        return {"size_matches": False, "bit_exact": False, "max_abs_diff": None, "fraction_differing": None,
                "psnr": None}
    mode = original.mode if original.mode == new.mode else ("RGBA" if "A" in original.mode + new.mode else "RGB")
    a = np.asarray(original.convert(mode), dtype=np.int16)
    b = np.asarray(new.convert(mode), dtype=np.int16)
    diff = np.abs(a - b)
    per_pixel = diff if diff.ndim == 2 else diff.max(axis=-1)
    mse = float(np.mean((a - b).astype(np.float64) ** 2))
    return {
        "size_matches": True,
        "bit_exact": bool(mse == 0.0),
        "max_abs_diff": int(diff.max()) if diff.size else 0,
        "fraction_differing": float(np.count_nonzero(per_pixel)) / per_pixel.size if per_pixel.size else 0.0,
        "psnr": math.inf if mse == 0.0 else 10.0 * math.log10(255.0 ** 2 / mse),
    }


# -- where the original comes from ------------------------------------------------------------------

@dataclass
class _Origin:
    kind: str  # run / png / a1111
    request: GenerationRequest
    image: Image.Image
    environment: dict[str, Any]
    run_id: str | None  # the original run, where known
    run: Run | None  # the original run as read from the store, where it was
    batch: tuple[int, int] | None  # (size, index)
    notes: list[str] = field(default_factory=list)
    recorded_uri: str | None = None  # the store a PNG says it was logged to


def _get_run(tracker: Tracker, run_id: str) -> Run:
    from mlflow.exceptions import MlflowException

    try:
        return tracker.client.get_run(run_id)
    except MlflowException:
        raise UnknownRunError(f"no run '{run_id}' in the MLflow store {tracker.display_uri}; check the id (the "
                              f"MLflow UI shows it), or pass --tracking-uri for the store it was logged to") from None


def _artifact(tracker: Tracker, run_id: str, name: str) -> bytes | None:
    try:
        return tracker.load_bytes(run_id, name)
    except Exception:  # missing artifact: MlflowException, OSError, depending on the store
        return None


def _request_json(data: bytes, where: str) -> GenerationRequest:
    try:
        return GenerationRequest.from_dict(json.loads(data))
    except (ValueError, TypeError) as exc:
        raise NotReproducibleError(f"the request.json of {where} is not a valid request: {exc}") from None


def _open_image(data: bytes | Path) -> Image.Image:
    from PIL import Image

    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
        img.load()
        return img.copy()


def _from_run(tracker: Tracker, run_id: str, model: str | None) -> _Origin:
    tracker.check()
    run = _get_run(tracker, run_id)
    kind = run.data.tags.get(KIND_TAG)
    if kind not in ("image", "reproduction"):
        raise NotReproducibleError(f"run {run_id} is a '{kind or 'non-workbench'}' run, not an image run"
                                   + ("; it is the parent run of a sweep: reproduce one of its image runs"
                                      if kind == "parent" else ""))
    data = _artifact(tracker, run_id, "request.json")
    if data is None:
        raise NotReproducibleError(f"run {run_id} has no request.json artifact; it was not logged by the workbench "
                                   f"or its artifacts were deleted")
    request = _request_json(data, f"run {run_id}")
    notes = []
    tagged_key = run.data.tags.get("workbench.run_key")
    if tagged_key and tagged_key != request.run_key:
        notes.append(f"the run's request.json hashes to run key {request.run_key}, but the run is tagged "
                     f"{tagged_key}: the artifact was changed after logging")
    image_bytes = _artifact(tracker, run_id, IMAGE_ARTIFACT)
    if image_bytes is None:
        reason = run.data.tags.get("workbench.status_reason")
        outcome = run.data.tags.get("workbench.outcome", run.info.status)
        raise NotReproducibleError(
            f"run {run_id} has no image to compare with (status {outcome}" + (f": {reason}" if reason else "")
            + "); only runs that produced an image can be reproduced")
    env_bytes = _artifact(tracker, run_id, "environment.json")
    environment = json.loads(env_bytes) if env_bytes else {}
    if env_bytes is None:
        notes.append("the run has no environment.json: environment differences cannot be reported")
    metrics = run.data.metrics
    size = metrics.get("batch_size", environment.get("batch_size"))
    index = metrics.get("batch_index", environment.get("batch_index"))
    batch = (int(size), int(index)) if size is not None and index is not None else None
    if model and model != request.model:
        notes.append(f"model overridden: '{request.model}' → '{model}' (a different run key)")
        request = request.replace(model=model)
    return _Origin("run", request, _open_image(image_bytes), environment, run_id, run, batch, notes)


def _from_png(path: Path, model: str | None, backend: str | None) -> _Origin:
    meta = read_png_metadata(path)
    image = _open_image(path)
    notes: list[str] = []
    if meta.workbench is not None:
        request = meta.request()
        if model and model != request.model:
            notes.append(f"model overridden: '{request.model}' → '{model}' (a different run key)")
            request = request.replace(model=model)
        batch = meta.batch
        size_index = (int(batch["size"]), int(batch["index"])) if "size" in batch and "index" in batch else None
        return _Origin("png", request, image, meta.environment, meta.run_id, None, size_index, notes,
                       recorded_uri=meta.tracking_uri)
    params = meta.a1111 or {}
    try:
        request = meta.request(model=model, backend=backend)
    except MetadataError as exc:
        raise MetadataError(f"'{path}' has only A1111 parameters, and they cannot be turned into a request: "
                            f"{exc}") from None
    if model and params.get("Model") and params["Model"] != model:
        notes.append(f"model: the file names '{params['Model']}'; regenerated with '{model}'")
    skipped = unused_a1111_keys(params)
    if skipped:
        notes.append("A1111 parameters not reproduced: " + ", ".join(f"{k}: {v}" for k, v in skipped.items()))
    notes.append("the file holds A1111 parameters only (no environment, no batch): made by another tool, its "
                 "noise and samplers may differ, so expect a different image")
    return _Origin("a1111", request, image, {}, None, None, None, notes)


def _load_origin(source: str | Path, tracker: Tracker, model: str | None, backend: str | None) -> _Origin:
    path = Path(source).expanduser()
    if path.is_file():
        return _from_png(path, model, backend)
    text = str(source).strip()
    if isinstance(source, str) and _RUN_ID.fullmatch(text):
        return _from_run(tracker, text, model)
    if isinstance(source, Path) or text.lower().endswith(".png") or "/" in text or "\\" in text:
        raise MetadataError(f"no such file: '{source}'")
    raise UnknownRunError(f"'{source}' is neither a PNG file nor an MLflow run id (32 hex digits)")


# -- the batch it was made in -----------------------------------------------------------------------

def _batch_store(tracker: Tracker, origin: _Origin, explicit_uri: str | None) -> Tracker:
    """Where the other images of a PNG's batch are: the store it names, unless one was given."""
    import os

    if origin.kind != "png" or explicit_uri or os.environ.get("MLFLOW_TRACKING_URI") or not origin.recorded_uri:
        return tracker
    recorded = Tracker(origin.recorded_uri)
    if recorded.uri == tracker.uri:
        return tracker
    try:
        recorded.check()
    except WorkbenchError:
        return tracker  # not reachable from here: look in the default store (the error names --tracking-uri)
    return recorded


def _batch(tracker: Tracker, origin: _Origin) -> tuple[list[GenerationRequest], int, list[str]]:
    """The requests of the original batch, in order, and the position of ``origin`` in it."""
    size, index = origin.batch or (1, 0)
    if size <= 1:
        return [origin.request], 0, []
    run = origin.run
    if run is None:  # from a PNG: the batch lives in the store
        if not origin.run_id:
            raise NotReproducibleError("--exact-batch needs the original run's id, and this PNG names none")
        tracker.check()
        try:
            run = _get_run(tracker, origin.run_id)
        except UnknownRunError:
            raise NotReproducibleError(
                f"--exact-batch needs the other images of the batch from the MLflow store, but run "
                f"{origin.run_id} is not in {tracker.display_uri}; pass --tracking-uri for the store it was "
                f"logged to") from None
    batch_id = run.data.tags.get(BATCH_TAG) or origin.environment.get("batch_id")
    if not batch_id:
        raise NotReproducibleError(f"run {run.info.run_id} has no {BATCH_TAG} tag: the batch it was made in is "
                                   f"unknown, so it can only be regenerated alone (drop --exact-batch)")
    query = f"tags.`{BATCH_TAG}` = '{batch_id}' and tags.`{KIND_TAG}` = 'image'"
    found = tracker.client.search_runs([run.info.experiment_id], filter_string=query, max_results=1000)
    by_index: dict[int, tuple[int, str, GenerationRequest]] = {}
    for member in found:
        member_id = member.info.run_id
        position = member.data.metrics.get("batch_index")
        if position is None:
            env = _artifact(tracker, member_id, "environment.json")
            position = json.loads(env).get("batch_index") if env else None
        data = _artifact(tracker, member_id, "request.json")
        if position is None or data is None:
            continue
        # A write retried after a failure can leave two runs for one position: keep the original, else a
        # finished one.
        rank = 0 if member_id == origin.run_id else 1 if member.info.status == "FINISHED" else 2
        current = by_index.get(int(position))
        if current is None or rank < current[0]:
            by_index[int(position)] = (rank, member_id, _request_json(data, f"run {member_id}"))
    positions = sorted(by_index)
    if index not in by_index:
        by_index[index] = (0, origin.run_id or "", origin.request)
        positions = sorted(by_index)
    notes = []
    if positions != list(range(size)):
        notes.append(f"only {len(positions)} of the {size} images of the original batch are in the store "
                     f"(positions {positions}); the batch was regenerated without the missing ones, so it is not "
                     f"the original batch shape")
    requests = [by_index[p][2] for p in positions]
    where = positions.index(index)
    requests[where] = origin.request
    if requests[where].model != by_index[index][2].model:  # a --model override applies to the whole batch
        requests = [r.replace(model=origin.request.model) for r in requests]
    return requests, where, notes


# -- the reproduction -------------------------------------------------------------------------------

def _backend(backend: Backend | str | None, request: GenerationRequest) -> tuple[Backend, GenerationRequest]:
    if isinstance(backend, Backend):
        return backend, request
    name = backend or request.backend
    return get_backend(name), request if name == request.backend else request.replace(backend=name)


def _fingerprint(env: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in jsonable(env).items() if k not in _CALL_FIELDS}


def reproduce(source: str | Path, *, tracking_uri: str | None = None, exact_batch: bool = False, log: bool = True,
              backend: Backend | str | None = None, model: str | None = None) -> ReproductionReport:
    """Regenerate the image of ``source`` (an MLflow run id or a PNG path) and compare it with the original.

    ``exact_batch`` regenerates the whole batch the image was made in, in one backend call, so the
    image can be bit-exact where hardware and versions match. ``log`` records the reproduction as a new
    run in the original's experiment (``workbench.kind=reproduction``, ``workbench.reproduces=<run id>``)
    with the report as an artifact. ``backend`` replaces the request's backend (a name, or a configured
    ``Backend`` instance); ``model`` replaces its model (needed for A1111 files naming a checkpoint we
    cannot load). Raises ``UserInputError`` subclasses for a bad source.

    Example:
        >>> report = reproduce("out/image.png", log=False)  # doctest: +SKIP
        >>> print(report.to_text())  # doctest: +SKIP
    """
    tracker = Tracker(tracking_uri)
    backend_name = backend if isinstance(backend, str) else None
    origin = _load_origin(source, tracker, model, backend_name)
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
        hint = "; pass --model (model=...) with a model this backend can load" if origin.kind == "a1111" else ""
        raise type(exc)(f"{exc}{hint}") from None
    current = engine.model_hash(request.model)
    if model or switched or origin.kind == "a1111":
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

    if exact_batch:
        store = _batch_store(tracker, origin, tracking_uri)
        if store is not tracker:
            notes.append(f"the other images of the batch were read from {store.display_uri}, the store the PNG "
                         f"names")
        requests, where, batch_notes = _batch(store, origin)
        notes += batch_notes
        requests = [r.replace(backend=request.backend) for r in requests]
    else:
        requests, where = [request], 0
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
                     f"slightly (often by one 8-bit level)"
                     + ("; use --exact-batch to regenerate the whole batch" if not exact_batch else ""))
    original_env = _fingerprint(origin.environment)
    result = dataclasses.replace(result, environment=run_environment(
        result.environment, backend=engine.name, batch_size=len(requests), batch_index=where))
    new_env = _fingerprint(dict(result.environment))
    env_diff = diff_environments(original_env, new_env) if origin.kind != "a1111" else {}
    info_diff = diff_environments(original_env, new_env, informational=True) if origin.kind != "a1111" else {}
    report = ReproductionReport(
        source=str(source), source_kind=origin.kind, request=request, original_run_id=origin.run_id,
        tracking_uri=tracker.display_uri if (origin.kind == "run" or log or exact_batch) else None,
        seed_controlled=seed_controlled, exact_batch=exact_batch,
        original_batch_size=origin.batch[0] if origin.batch else None,
        original_batch_index=origin.batch[1] if origin.batch else None,
        batch_size=len(requests), batch_index=where, environment_diff=env_diff, informational_diff=info_diff,
        original_environment=original_env, environment=new_env, notes=notes, image=result.image,
        original_image=origin.image, **comparison)
    if log:
        _log(tracker, report, origin, result, source)
    return report


def _log(tracker: Tracker, report: ReproductionReport, origin: _Origin, result: GeneratedImage,
         source: str | Path) -> None:
    from mlflow.entities import Metric

    tracker.check()
    experiment_id = origin.run.info.experiment_id if origin.run is not None else None
    if experiment_id is None and origin.run_id:
        try:
            experiment_id = _get_run(tracker, origin.run_id).info.experiment_id
        except UnknownRunError:
            experiment_id = None
    if experiment_id is None:
        experiment_id = tracker.experiment_id(REPRODUCTIONS_EXPERIMENT)
    assert experiment_id is not None
    tags = {KIND_TAG: "reproduction", "workbench.reproduction.source": origin.kind,
            "workbench.reproduction.verdict": report.verdict,
            "workbench.exact_batch": str(report.exact_batch).lower()}
    if origin.run_id:
        tags[REPRODUCES_TAG] = origin.run_id
    else:
        tags["workbench.reproduces_file"] = Path(str(source)).name[:250]
    run_id = tracker.log_image_run(experiment_id, None, result, extra_tags=tags)
    report.reproduction_run_id = run_id
    client = tracker.client
    client.set_tag(run_id, "mlflow.runName", f"reproduce {origin.run_id or Path(str(source)).name}"[:250])
    metrics = {"bit_exact": float(report.bit_exact)}
    if report.max_abs_diff is not None:
        metrics["max_abs_diff"] = float(report.max_abs_diff)
        metrics["fraction_differing"] = float(report.fraction_differing or 0.0)
    if report.psnr is not None and math.isfinite(report.psnr):
        metrics["psnr_db"] = report.psnr
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])
    tracker.log_text(run_id, report.to_json(), "reproduction.json")
    tracker.log_text(run_id, report.to_text() + "\n", "reproduction.txt")


def _short(text: str, limit: int = 100) -> str:
    text = text.replace("\n", "⏎")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return canonical_json(value)
    return "(absent)" if value is None else str(value)
