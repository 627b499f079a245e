"""Where an image to reproduce comes from: its request, image, environment and batch, from the source at hand.

``load_origin`` reads an MLflow run (its ``request.json``, PNG and ``environment.json``), a PNG's
``workbench`` chunk, or another tool's metadata (an A1111 ``parameters`` text, a ComfyUI graph, InvokeAI's
metadata: a request, nothing more, and notes on what it does not reproduce).
``batch_requests`` rebuilds the batch the image was made in, in order, from the runs that share its
``batch_id``, so that ``reproduce`` regenerates it in its original shape. Runs logged before the batch position moved out of the environment
are read the same way: the metrics first, then the environment.
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MetadataError, NotReproducibleError, UnknownRunError, WorkbenchError
from ..provenance.imported import SOURCES
from ..provenance.png import read_png_metadata
from ..tracking.schema import (
    BATCH_ID_TAG,
    BATCH_INDEX_METRIC,
    BATCH_SIZE_METRIC,
    ENVIRONMENT_ARTIFACT,
    IMAGE,
    IMAGE_ARTIFACT,
    OUTCOME_TAG,
    PARENT,
    REPRODUCTION,
    REQUEST_ARTIFACT,
    RUN_KEY_TAG,
    STATUS_REASON_TAG,
    RunRecord,
)
from ..tracking.store import Tracker
from ..types import GenerationRequest

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["Origin", "load_origin", "batch_store", "batch_requests", "FOREIGN_KINDS"]

# Origins read from another tool's file: a request only (no environment, no batch, no run).
FOREIGN_KINDS = frozenset(SOURCES)

_RUN_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class Origin:
    """The image to reproduce, and what is known about how it was made."""

    kind: str  # "run", "png" (workbench chunk), or another tool's file: "a1111", "comfyui", "invokeai"
    request: GenerationRequest
    image: Image.Image
    environment: dict[str, Any]
    run_id: str | None  # the original run, where known
    run: RunRecord | None  # the original run as read from the store, where it was
    batch: tuple[int, int] | None  # (size, index)
    batch_id: str | None = None  # the backend call it was made in, shared by its batch
    notes: list[str] = field(default_factory=list)
    recorded_uri: str | None = None  # the store a PNG says it was logged to

    @property
    def foreign(self) -> bool:
        """Read from another tool's metadata: the environment and the noise it drew are unknown."""
        return self.kind in FOREIGN_KINDS


def load_origin(source: str | Path, tracker: Tracker, model: str | None, backend: str | None) -> Origin:
    """The origin of ``source``: a PNG path, or an MLflow run id in ``tracker``'s store."""
    path = Path(source).expanduser()
    if path.is_file():
        return _from_png(path, model, backend)
    text = str(source).strip()
    if isinstance(source, str) and _RUN_ID.fullmatch(text):
        return _from_run(tracker, text, model)
    if isinstance(source, Path) or text.lower().endswith(".png") or "/" in text or "\\" in text:
        raise MetadataError(f"no such file: '{source}'")
    raise UnknownRunError(f"'{source}' is neither a PNG file nor an MLflow run id (32 hex digits)")


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


def _from_run(tracker: Tracker, run_id: str, model: str | None) -> Origin:
    tracker.check()
    run = tracker.run(run_id)
    if run.kind not in (IMAGE, REPRODUCTION):
        raise NotReproducibleError(f"run {run_id} is a '{run.kind or 'non-workbench'}' run, not an image run"
                                   + ("; it is the parent run of a sweep: reproduce one of its image runs"
                                      if run.kind == PARENT else ""))
    data = _artifact(tracker, run_id, REQUEST_ARTIFACT)
    if data is None:
        raise NotReproducibleError(f"run {run_id} has no request.json artifact; it was not logged by the workbench "
                                   f"or its artifacts were deleted")
    request = _request_json(data, f"run {run_id}")
    notes = []
    tagged_key = run.tags.get(RUN_KEY_TAG)
    if tagged_key and tagged_key != request.run_key:
        notes.append(f"the run's request.json hashes to run key {request.run_key}, but the run is tagged "
                     f"{tagged_key}: the artifact was changed after logging")
    image_bytes = _artifact(tracker, run_id, IMAGE_ARTIFACT)
    if image_bytes is None:
        reason = run.tags.get(STATUS_REASON_TAG)
        outcome = run.tags.get(OUTCOME_TAG, run.status)
        raise NotReproducibleError(
            f"run {run_id} has no image to compare with (status {outcome}" + (f": {reason}" if reason else "")
            + "); only runs that produced an image can be reproduced")
    env_bytes = _artifact(tracker, run_id, ENVIRONMENT_ARTIFACT)
    environment = json.loads(env_bytes) if env_bytes else {}
    if env_bytes is None:
        notes.append("the run has no environment.json: environment differences cannot be reported")
    size = run.metrics.get(BATCH_SIZE_METRIC, environment.get("batch_size"))
    index = run.metrics.get(BATCH_INDEX_METRIC, environment.get("batch_index"))
    batch = (int(size), int(index)) if size is not None and index is not None else None
    if model and model != request.model:
        notes.append(f"model overridden: '{request.model}' → '{model}' (a different run key)")
        request = request.replace(model=model)
    batch_id = run.tags.get(BATCH_ID_TAG) or environment.get("batch_id")
    return Origin("run", request, _open_image(image_bytes), environment, run_id, run, batch, batch_id, notes)


def _from_png(path: Path, model: str | None, backend: str | None) -> Origin:
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
        return Origin("png", request, image, meta.environment, meta.run_id, None, size_index, meta.batch_id, notes,
                      recorded_uri=meta.tracking_uri)
    try:
        imported = meta.imported(model=model, backend=backend)
    except MetadataError as exc:
        raise MetadataError(f"'{path}' has only {SOURCES[meta.source]}, and they cannot be turned into a request: "
                            f"{exc}") from None
    assert imported is not None
    params = meta.a1111 or {}
    if model and params.get("Model") and params["Model"] != model:
        notes.append(f"model: the file names '{params['Model']}'; regenerated with '{model}'")
    notes += imported.notes
    if imported.not_reproduced:
        notes.append(f"{imported.described} not reproduced: "
                     + ", ".join(f"{k}: {v}" for k, v in imported.not_reproduced.items()))
    notes.append(f"the file holds {imported.described} only (no environment, no batch): made by another tool, its "
                 "noise and samplers may differ, so expect a different image")
    return Origin(imported.source, imported.request, image, {}, None, None, None, None, notes)


# -- the batch it was made in -----------------------------------------------------------------------

def batch_store(tracker: Tracker, origin: Origin, explicit_uri: str | None) -> Tracker:
    """Where the other images of a PNG's batch are: the store it names, unless one was given."""
    if origin.kind != "png" or explicit_uri or os.environ.get("MLFLOW_TRACKING_URI") or not origin.recorded_uri:
        return tracker
    recorded = Tracker(origin.recorded_uri, create=False)
    if recorded.uri == tracker.uri:
        return tracker
    try:
        recorded.check()
    except WorkbenchError:
        return tracker  # not reachable from here: look in the default store (the error names --tracking-uri)
    return recorded


def batch_requests(tracker: Tracker, origin: Origin) -> tuple[list[GenerationRequest], int, list[str]]:
    """The requests of the original batch, in order, and the position of ``origin`` in it."""
    size, index = origin.batch or (1, 0)
    if size <= 1:
        return [origin.request], 0, []
    run = origin.run
    if run is None:  # from a PNG: the batch lives in the store
        if not origin.run_id:
            raise NotReproducibleError("the other images of the batch are found by the original run's id, and "
                                       "this PNG names none")
        tracker.check()
        try:
            run = tracker.run(origin.run_id)
        except UnknownRunError:
            raise NotReproducibleError(
                f"the other images of the batch are read from the MLflow store, but run "
                f"{origin.run_id} is not in {tracker.display_uri}; pass --tracking-uri for the store it was "
                f"logged to") from None
    batch_id = run.tags.get(BATCH_ID_TAG) or origin.batch_id
    if not batch_id:
        raise NotReproducibleError(f"run {run.run_id} has no {BATCH_ID_TAG} tag: the batch it was made in is "
                                   f"unknown, so it can only be regenerated alone (--alone)")
    by_index: dict[int, tuple[int, str, GenerationRequest]] = {}
    for member in tracker.batch_members(run.experiment_id, batch_id):
        position = member.metrics.get(BATCH_INDEX_METRIC)
        if position is None:
            env = _artifact(tracker, member.run_id, ENVIRONMENT_ARTIFACT)
            position = json.loads(env).get("batch_index") if env else None
        data = _artifact(tracker, member.run_id, REQUEST_ARTIFACT)
        if position is None or data is None:
            continue
        # A write retried after a failure can leave two runs for one position: keep the original, else a
        # finished one.
        rank = 0 if member.run_id == origin.run_id else 1 if member.status == "FINISHED" else 2
        current = by_index.get(int(position))
        if current is None or rank < current[0]:
            by_index[int(position)] = (rank, member.run_id, _request_json(data, f"run {member.run_id}"))
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
