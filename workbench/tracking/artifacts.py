"""The artifact folder of an image run: the PNG with its metadata chunks, the request, prompts and notes.

Written to a temporary folder and uploaded in one call (``Tracker.log_image_run``). The names are
``schema``'s; the PNG's ``workbench`` chunk names the run, so a loose file finds its way back.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..prompts.diff import diff_prompts
from ..provenance.a1111 import a1111_parameters
from ..provenance.environment import recorded_environment
from ..provenance.png import encode_png, workbench_metadata
from ..types import GenerationFailure, GenerationResult
from .schema import (
    ENVIRONMENT_ARTIFACT,
    FAILURE_ARTIFACT,
    IMAGE_ARTIFACT,
    NEGATIVE_PROMPT_ARTIFACT,
    NOTES_FOLDER,
    PROMPT_ARTIFACT,
    PROMPT_DIFF_ARTIFACT,
    REQUEST_ARTIFACT,
    REVISED_PROMPT_ARTIFACT,
)

__all__ = ["write_image_artifacts"]


def write_image_artifacts(folder: Path, result: GenerationResult, *, run_id: str, experiment_id: str,
                          tracking_uri: str) -> None:
    """Write every artifact of the image run ``run_id`` into ``folder``."""
    request = result.request
    (folder / REQUEST_ARTIFACT).write_text(json.dumps(request.to_dict(), indent=2, ensure_ascii=False))
    (folder / PROMPT_ARTIFACT).write_text(request.prompt + "\n")
    if request.negative_prompt:
        (folder / NEGATIVE_PROMPT_ARTIFACT).write_text(request.negative_prompt + "\n")
    (folder / ENVIRONMENT_ARTIFACT).write_text(json.dumps(recorded_environment(result), indent=2, default=str))
    for name, note in result.notes.items():  # backend logs, truncation details...
        safe = re.sub(r"[^\w.-]", "_", str(name)).strip(".")[:64] or "note"  # never a path
        (folder / NOTES_FOLDER).mkdir(exist_ok=True)
        (folder / NOTES_FOLDER / f"{safe}.txt").write_text(str(note) + "\n")
    if isinstance(result, GenerationFailure):
        (folder / FAILURE_ARTIFACT).write_text(f"{result.status}: {result.reason}\n")
        return
    meta = workbench_metadata(result, run_id=run_id, tracking_uri=tracking_uri, experiment_id=experiment_id)
    (folder / IMAGE_ARTIFACT).write_bytes(encode_png(result.image, parameters=a1111_parameters(request),
                                                     workbench=meta))
    if result.revised_prompt is not None:
        (folder / REVISED_PROMPT_ARTIFACT).write_text(result.revised_prompt + "\n")
        (folder / PROMPT_DIFF_ARTIFACT).write_text(diff_prompts(request.prompt, result.revised_prompt).to_text())
    if result.original_bytes is not None and result.original_format not in (None, "png"):
        (folder / f"original.{result.original_format}").write_bytes(result.original_bytes)
