"""What a Replicate prediction said, as the parts of a result: ids, logs, timings, outcome, flags.

Pure: prediction JSON in (as ``replicate_api.Prediction`` keeps it), plain values out; ``replicate.py``
assembles them into a ``GeneratedImage`` or a ``GenerationFailure``.

Example:
    >>> first_output({"id": "p1", "status": "succeeded", "output": ["https://x/out-0.png"]}, None)
    ('https://x/out-0.png', 1)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..types import GenerationRequest
from ._http import RequestFailed, redact
from .replicate_api import PredictionState
from .replicate_models import ReplicateModelProfile

__all__ = ["Reported", "first_output", "image_flags"]

_SAFETY = re.compile(r"nsfw|safety|content policy|sensitive|flagged", re.IGNORECASE)
_SEED_LOG = re.compile(r"Using seed:\s*(-?\d+)")
_LOG_LIMIT = 2000  # characters of the model's log kept in notes (the end: where errors are)


@dataclass
class Reported:
    """What Replicate said about a prediction (id, version, seed, logs, timings), for any outcome."""

    ids: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, state: PredictionState, token: str | None) -> Reported:
        out = cls()
        if state.poll_errors:
            out.notes["poll_errors"] = f"{state.poll_errors} (last: {state.last_poll_error})"
        prediction = state.latest
        if prediction is None:  # the create failed: nothing was said
            return out
        out.ids["prediction_id"] = state.prediction_id
        version = prediction.get("version")
        if version:
            out.ids["model_version"] = str(version)
            if version != "hidden":
                out.env["model_version"] = str(version)
        if prediction.get("model"):
            out.ids["model"] = str(prediction["model"])
        logs = redact(str(prediction.get("logs") or ""), token)
        seeds = _SEED_LOG.findall(logs)
        if seeds:
            out.ids["seed"] = seeds[-1]
        if logs:
            out.notes["logs"] = logs if len(logs) <= _LOG_LIMIT else "[...]\n" + logs[-_LOG_LIMIT:]
        reported = prediction.get("metrics") or {}
        if isinstance(reported, dict):
            for key in ("predict_time", "total_time"):
                try:
                    out.metrics[f"{key}_s"] = float(reported[key])
                except (KeyError, TypeError, ValueError):
                    continue
        if "predict_time_s" in out.metrics:
            out.notes["predict_time_s"] = f"{out.metrics['predict_time_s']:.3f}"
        return out


def first_output(prediction: Mapping[str, Any], token: str | None) -> tuple[object, int]:
    """The first output of a finished prediction and how many there were; ``RequestFailed`` unless it
    succeeded with at least one."""
    status = str(prediction.get("status"))
    pid = str(prediction.get("id", "?"))
    if status == "failed":
        error = redact(str(prediction.get("error") or "no error message"), token)
        if _SAFETY.search(error):
            raise RequestFailed(f"blocked by the model's safety checker: {error}", status="BLOCKED",
                                error_type="ContentPolicyError")
        raise RequestFailed(f"prediction {pid} failed: {error}", error_type="PredictionFailed")
    # Replicate's changelog (2025-10-16): a Cancel-After deadline reached before the prediction started ends
    # it 'aborted' (not charged, for public models); reached while it ran, 'canceled' (charged for its time).
    if status == "canceled":
        raise RequestFailed(f"prediction {pid} was canceled while it ran, not by this run (its Cancel-After "
                            "deadline, or another client); its time so far is charged", error_type="PredictionCanceled")
    if status == "aborted":
        raise RequestFailed(f"prediction {pid} was aborted by Replicate before it started (status 'aborted': its "
                            "Cancel-After deadline came first; not charged)", error_type="PredictionAborted")
    if status != "succeeded":
        raise RequestFailed(f"prediction {pid} ended with unknown status {status!r}",
                            error_type="InvalidResponseError")
    output = prediction.get("output")
    outputs = list(output) if isinstance(output, list | tuple) else [] if output is None else [output]
    if not outputs:
        removed = " (data_removed: outputs are deleted an hour after the prediction)" if prediction.get(
            "data_removed") else ""
        raise RequestFailed(f"InvalidResponse: prediction {pid} succeeded but holds no output{removed}",
                            error_type="InvalidResponseError")
    return outputs[0], len(outputs)


def image_flags(request: GenerationRequest, profile: ReplicateModelProfile, size: tuple[int, int],
                 inputs: Mapping[str, Any], ids: Mapping[str, str], notes: dict[str, str]) -> set[str]:
    """What could not be held for this image (seed, determinism, size); the detail goes in ``notes``."""
    flags: set[str] = set()
    if request.seed is None:
        flags.add("seed_not_controlled")
        if "seed" in ids:
            notes["seed"] = f"no seed was given; the model used seed {ids['seed']} (from its logs)"
    elif "seed" in ids and ids["seed"] != str(request.seed):
        flags.add("seed_mismatch")
        notes["seed"] = f"asked seed {request.seed}; the model's logs say {ids['seed']}"
    if inputs.get("go_fast") is True:
        flags.add("nondeterministic")
        notes["nondeterministic"] = ("go_fast=true: fp8 kernels are not deterministic even with a fixed seed; "
                                     "the image may not reproduce exactly")
    if size != (request.width, request.height):
        got = f"asked {request.width}x{request.height}, got {size[0]}x{size[1]}"
        asked_ratio, got_ratio = request.width / request.height, size[0] / size[1]
        if profile.sizing == "aspect_ratio" and abs(math.log(got_ratio / asked_ratio)) < 0.03:
            notes["size"] = f"{got} (the model sets pixels from aspect_ratio and megapixels)"
        else:
            flags.add("size_mismatch")
            notes["size_mismatch"] = got
    return flags
