"""A local spool for finished images the tracking store could not take (a server gone mid-sweep).

Nothing finished is lost: when a write still fails after its retries, the result is saved here as a
folder (``result.json`` + ``image.png``, written atomically) under ``<home>/spool/<store>/``. The
next ``workbench run`` against the same store uploads the spool first; an entry is deleted only once
its run is logged and FINISHED.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from ..config import workbench_home
from ..files import temp_folder
from ..hashing import content_hash
from ..types import GeneratedImage, GenerationFailure, GenerationRequest, GenerationResult
from .schema import SPOOLED_TAG

if TYPE_CHECKING:
    from .store import Tracker

__all__ = ["spool_dir", "spool_result", "pending", "load_entry", "upload_spool"]


def spool_dir(tracking_uri: str) -> Path:
    """The spool folder of one store (entries never go to another store by mistake)."""
    return workbench_home() / "spool" / content_hash(tracking_uri, 12)


def spool_result(result: GenerationResult, *, tracking_uri: str, experiment: str, parent_run_id: str | None) -> Path:
    """Save ``result`` for a later upload; returns its folder."""
    root = spool_dir(tracking_uri)
    root.mkdir(parents=True, exist_ok=True)
    target = root / result.request.run_key
    tmp = temp_folder(root, ".tmp-")
    data: dict[str, Any] = {
        "experiment": experiment, "parent_run_id": parent_run_id, "status": result.status,
        "request": result.request.to_dict(), "latency_s": result.latency_s, "cost_usd": result.cost_usd,
        "backend_ids": dict(result.backend_ids), "environment": dict(result.environment),
        "notes": dict(result.notes), "batch_size": result.batch_size, "batch_index": result.batch_index,
        "batch_id": result.batch_id, "metrics": dict(result.metrics),  # the backend's numbers and the scores
    }
    if isinstance(result, GeneratedImage):
        data.update(revised_prompt=result.revised_prompt, flags=sorted(result.flags),
                    original_format=result.original_format)
        result.image.save(tmp / "image.png")
        if result.original_bytes is not None:
            (tmp / "original.bin").write_bytes(result.original_bytes)
    else:
        data.update(reason=result.reason, error_type=result.error_type)
    (tmp / "result.json").write_text(json.dumps(data, default=str, indent=1))
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)  # a killed process never leaves a half-written entry
    return target


def pending(tracking_uri: str) -> list[Path]:
    root = spool_dir(tracking_uri)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".tmp-")
                  and (p / "result.json").is_file())


def load_entry(folder: Path) -> tuple[GenerationResult, str, str | None]:
    """(result, experiment name, parent run id) of a spooled entry."""
    data = json.loads((folder / "result.json").read_text())
    request = GenerationRequest.from_dict(data["request"])
    environment = dict(data["environment"])
    # Entries spooled before the batch position moved out of the environment kept it there (and failures
    # kept it nowhere else).
    common = {"backend_ids": data["backend_ids"], "latency_s": data["latency_s"], "environment": environment,
              "notes": data["notes"], "cost_usd": data["cost_usd"],
              "batch_size": data.get("batch_size", environment.get("batch_size", 1)),
              "batch_index": data.get("batch_index", environment.get("batch_index", 0)),
              "batch_id": data.get("batch_id", environment.get("batch_id")),
              "metrics": data.get("metrics", {})}  # entries spooled before scores existed kept none
    result: GenerationResult
    if data["status"] == "FINISHED":
        with Image.open(io.BytesIO((folder / "image.png").read_bytes())) as img:
            img.load()
            image = img.copy()
        original = folder / "original.bin"
        result = GeneratedImage(request=request, image=image, revised_prompt=data["revised_prompt"],
                                flags=frozenset(data["flags"]), original_format=data["original_format"],
                                original_bytes=original.read_bytes() if original.is_file() else None, **common)
    else:
        result = GenerationFailure(request=request, reason=data["reason"], status=data["status"],
                                   error_type=data["error_type"], **common)
    return result, data["experiment"], data["parent_run_id"]


def upload_spool(tracker: Tracker) -> int:
    """Log every spooled entry of ``tracker``'s store (skipping ones already FINISHED); returns how many."""
    uploaded = 0
    finished: dict[str, set[str]] = {}  # experiment → finished run keys, searched once per experiment
    for folder in pending(tracker.uri):
        result, experiment, parent = load_entry(folder)
        experiment_id = tracker.experiment_id(experiment)
        done = finished.setdefault(experiment, set(tracker.finished_keys(experiment)))
        if result.request.run_key not in done:
            tracker.log_image_run(experiment_id, parent, result, extra_tags={SPOOLED_TAG: "true"})
            done.add(result.request.run_key)
            uploaded += 1
        shutil.rmtree(folder)
    return uploaded
