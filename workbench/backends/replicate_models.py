"""Replicate model profiles: what each model's inputs are called, which values they take, what it costs.

Data for ``replicate.py``, kept apart so a price or a new model is a change here only. Known models have a
profile in ``PROFILES``; any other model gets ``GENERIC_PROFILE`` (``prompt`` and ``seed`` only, other
inputs pass through from ``request.options`` verbatim). ``build_input`` maps a request onto a profile's
inputs and ``validate_options`` checks ``request.options`` against it; both are pure (no I/O).

Example:
    >>> inputs, notes = build_input(PROFILES[DEFAULT_MODEL], GenerationRequest(
    ...     backend="replicate", model=DEFAULT_MODEL, prompt="a fox", seed=1, width=1024, height=576,
    ...     steps=4))
    >>> inputs["aspect_ratio"], inputs["megapixels"], inputs["go_fast"]
    ('16:9', '1', False)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import UnsupportedRequestError
from ..types import GenerationRequest

__all__ = ["ReplicateModelProfile", "PROFILES", "GENERIC_PROFILE", "DEFAULT_MODEL", "PRICES_AS_OF",
           "FLUX_ASPECT_RATIOS", "MAPPED_INPUTS", "CONTROL_OPTIONS", "parse_model_ref",
           "nearest_aspect_ratio", "aspect_ratio_value", "validate_options", "build_input"]

DEFAULT_MODEL = "black-forest-labs/flux-schnell"
PRICES_AS_OF = "2026-11-22"  # estimates from replicate.com model pages of that date
FLUX_ASPECT_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")


@dataclass(frozen=True)
class ReplicateModelProfile:
    """How our parameters map to one model's inputs, and what it costs."""

    name: str  # owner/name
    official: bool = True  # official models run without a version (model route)
    sizing: Literal["aspect_ratio", "width_height", "none"] = "aspect_ratio"
    aspect_ratios: tuple[str, ...] = FLUX_ASPECT_RATIOS
    size_range: tuple[int, int] = (128, 2048)  # width_height sizing: min/max side, multiples of 8
    seed_input: str | None = "seed"
    steps_input: str | None = "num_inference_steps"
    steps_range: tuple[int, int] | None = None
    guidance_input: str | None = None
    guidance_range: tuple[float, float] | None = None
    negative_prompt_input: str | None = None
    schedulers: tuple[str, ...] = ()  # names the model's ``scheduler`` input takes
    # Options a spec may set (request.options): name -> allowed values (None: any value of ``option_types``)
    options: Mapping[str, tuple[Any, ...] | None] = field(default_factory=dict)
    option_types: Mapping[str, type | tuple[type, ...]] = field(default_factory=dict)
    option_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    # Inputs we always send unless the spec sets them (recorded in notes["input"]).
    defaults: Mapping[str, Any] = field(default_factory=dict)
    price_per_image: float | None = None
    seconds_per_image: float = 5.0
    known: bool = True  # False: the generic profile for models we have no schema for


_FLUX_OPTIONS: Mapping[str, tuple[Any, ...] | None] = {
    "aspect_ratio": FLUX_ASPECT_RATIOS, "output_format": ("webp", "jpg", "png"), "output_quality": None,
    "megapixels": ("1", "0.25"), "go_fast": (True, False), "disable_safety_checker": (True, False)}
_FLUX_TYPES: Mapping[str, type | tuple[type, ...]] = {"output_quality": int}
_FLUX_RANGES = {"output_quality": (0, 100)}
# go_fast=False by default: its fp8 path is "not deterministic ... even if you set a seed".
_FLUX_DEFAULTS = {"output_format": "png", "go_fast": False}

PROFILES: dict[str, ReplicateModelProfile] = {
    "black-forest-labs/flux-schnell": ReplicateModelProfile(
        "black-forest-labs/flux-schnell", steps_range=(1, 4), options=_FLUX_OPTIONS, option_types=_FLUX_TYPES,
        option_ranges=_FLUX_RANGES, defaults=_FLUX_DEFAULTS, price_per_image=0.003, seconds_per_image=2.0),
    "black-forest-labs/flux-dev": ReplicateModelProfile(
        "black-forest-labs/flux-dev", steps_range=(1, 50), guidance_input="guidance", guidance_range=(0.0, 10.0),
        options=_FLUX_OPTIONS, option_types=_FLUX_TYPES, option_ranges=_FLUX_RANGES, defaults=_FLUX_DEFAULTS,
        price_per_image=0.025, seconds_per_image=8.0),
    "stability-ai/sdxl": ReplicateModelProfile(
        "stability-ai/sdxl", official=False, sizing="width_height", steps_range=(1, 500),
        guidance_input="guidance_scale", guidance_range=(1.0, 50.0), negative_prompt_input="negative_prompt",
        schedulers=("DDIM", "DPMSolverMultistep", "HeunDiscrete", "KarrasDPM", "K_EULER_ANCESTRAL", "K_EULER",
                    "PNDM"),
        price_per_image=0.004, seconds_per_image=10.0),
}
GENERIC_PROFILE = ReplicateModelProfile("(generic)", sizing="none", steps_input=None, known=False,
                                        seconds_per_image=10.0)
# Inputs that come from request fields; specs must not also set them as options.
MAPPED_INPUTS = {"prompt": "prompt", "seed": "seed", "num_inference_steps": "steps", "guidance": "guidance",
                 "guidance_scale": "guidance", "negative_prompt": "negative_prompt", "width": "width",
                 "height": "height", "scheduler": "scheduler", "num_outputs": "(one image per request)"}
# Options that steer the backend itself, never sent as model inputs.
CONTROL_OPTIONS = frozenset({"deadline_s"})


def parse_model_ref(ref: str) -> tuple[str, str | None]:
    """``"owner/name"`` or ``"owner/name:version"`` -> ``("owner/name", version or None)``.

    >>> parse_model_ref("black-forest-labs/flux-schnell:abc123")
    ('black-forest-labs/flux-schnell', 'abc123')
    """
    match = re.fullmatch(r"([^/\s:]+)/([^/\s:]+)(?::([A-Za-z0-9._-]+))?", ref.strip())
    if not match:
        raise UnsupportedRequestError(
            f"replicate: model '{ref}' is not 'owner/name' or 'owner/name:version' "
            f"(e.g. '{DEFAULT_MODEL}')")
    return f"{match.group(1)}/{match.group(2)}", match.group(3)


def aspect_ratio_value(text: str) -> float:
    """``"16:9"`` -> ``16 / 9``."""
    w, h = (int(v) for v in text.split(":"))
    return w / h


def nearest_aspect_ratio(width: int, height: int, allowed: Sequence[str] = FLUX_ASPECT_RATIOS) -> str:
    """The allowed ``W:H`` closest to ``width/height`` (on a log scale).

    >>> nearest_aspect_ratio(1000, 600)
    '16:9'
    """
    target = math.log(width / height)
    return min(allowed, key=lambda r: abs(math.log(aspect_ratio_value(r)) - target))


def validate_options(profile: ReplicateModelProfile, name: str, options: Mapping[str, Any]) -> None:
    """Check ``request.options`` against ``profile`` (any input passes for a model without a schema)."""
    for key, value in options.items():
        if key in CONTROL_OPTIONS:
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise UnsupportedRequestError(f"replicate: option {key} must be a positive number, got {value!r}")
            continue
        if key in MAPPED_INPUTS:
            raise UnsupportedRequestError(
                f"replicate: option '{key}' is set from the spec's '{MAPPED_INPUTS[key]}' field; remove it from "
                "the options")
        if not profile.known:
            continue  # a model we have no schema for: its inputs pass through
        if key not in profile.options:
            allowed = ", ".join(sorted(profile.options) + sorted(CONTROL_OPTIONS))
            raise UnsupportedRequestError(
                f"replicate model '{name}' has no option '{key}'; options it takes: {allowed}")
        allowed_values = profile.options[key]
        if allowed_values is not None:
            if value not in allowed_values or (isinstance(value, bool) != isinstance(allowed_values[0], bool)):
                raise UnsupportedRequestError(
                    f"replicate model '{name}' does not take {key}={value!r}; allowed values: "
                    f"{', '.join(map(str, allowed_values))}")
            continue
        kind = profile.option_types.get(key)
        if kind is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            raise UnsupportedRequestError(f"replicate: option {key} must be {kind}, got {value!r}")
        if key in profile.option_ranges:
            low, high = profile.option_ranges[key]
            if not low <= value <= high:
                raise UnsupportedRequestError(f"replicate: option {key} must be {low:g}..{high:g}, got {value!r}")


def build_input(profile: ReplicateModelProfile,
                request: GenerationRequest) -> tuple[dict[str, Any], dict[str, str]]:
    """The model input for ``request`` under ``profile``, and notes on how parameters were mapped."""
    options = {k: v for k, v in request.options.items() if k not in CONTROL_OPTIONS}
    inputs: dict[str, Any] = {"prompt": request.prompt}
    notes: dict[str, str] = {}
    if request.seed is not None and profile.seed_input:
        inputs[profile.seed_input] = int(request.seed)
    if profile.sizing == "aspect_ratio":
        if "aspect_ratio" not in options:
            ratio = nearest_aspect_ratio(request.width, request.height, profile.aspect_ratios)
            inputs["aspect_ratio"] = ratio
            if abs(aspect_ratio_value(ratio) - request.width / request.height) > 1e-3:
                notes["aspect_ratio"] = (f"asked {request.width}x{request.height} (ratio "
                                         f"{request.width / request.height:.3f}); sent the nearest allowed "
                                         f"aspect_ratio {ratio} ({aspect_ratio_value(ratio):.3f})")
        if "megapixels" not in options and "megapixels" in profile.options:
            # nearer (on a log scale) to 0.25 MP or to 1 MP
            inputs["megapixels"] = "0.25" if request.width * request.height <= 512 * 1024 else "1"
    elif profile.sizing == "width_height":
        inputs["width"], inputs["height"] = request.width, request.height
    if profile.steps_input:
        inputs[profile.steps_input] = int(request.steps)
    if profile.guidance_input:
        inputs[profile.guidance_input] = float(request.guidance)
    if profile.negative_prompt_input and request.negative_prompt:
        inputs[profile.negative_prompt_input] = request.negative_prompt
    if request.scheduler and profile.schedulers:
        inputs["scheduler"] = request.scheduler
    for key, value in profile.defaults.items():
        inputs.setdefault(key, value)
    inputs.update(options)
    return inputs, notes
