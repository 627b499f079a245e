"""What the installed ``openai`` SDK knows about image generation, read from its types at run time.

The SDK is generated from OpenAI's API spec, so its ``Literal`` types are the current list of image models
(``openai.types.ImageModel``) and of the values each ``images.generate`` parameter takes
(``openai.types.image_generate_params.ImageGenerateParamsBase``). Reading them with ``typing.get_args``
keeps the catalogue as current as the installed SDK: a model the SDK lists and we have no profile for is
sent as asked (with a warning that its cost and limits are unknown) instead of being refused.

Without the SDK (the ``openai`` extra not installed) both are empty; the backend then names the extra.

Example:
    >>> "gpt-image-2" in sdk_models()  # doctest: +SKIP
    True
    >>> sdk_parameter_values()["quality"]  # doctest: +SKIP
    ('low', 'medium', 'high', 'xhigh', 'max', 'auto', 'standard', 'hd')
"""

from __future__ import annotations

import functools
import typing
from importlib import import_module
from typing import Any

__all__ = ["sdk_models", "sdk_parameters", "sdk_parameter_values", "BACKEND_PARAMETERS", "RASTER_FORMATS"]

# images.generate parameters the backend sets itself (one image per call, fetched as base64, not streamed).
BACKEND_PARAMETERS = frozenset({"model", "prompt", "size", "n", "response_format", "stream", "partial_images"})
# Output formats the workbench can decode, validate and store (decode_image): not GIF frames or SVG text.
RASTER_FORMATS = ("png", "jpeg", "webp")


def _literals(annotation: Any) -> tuple[Any, ...]:
    """Every Literal value inside an annotation (through Optional, Union and TypeAlias)."""
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    values: list[Any] = []
    for arg in typing.get_args(annotation):
        values += [v for v in _literals(arg) if v not in values]
    return tuple(values)


@functools.lru_cache(maxsize=1)
def sdk_models() -> tuple[str, ...]:
    """The image model names of the installed SDK (``openai.types.ImageModel``), in its order; () without it."""
    try:
        module = import_module("openai.types.image_model")
    except ImportError:
        return ()
    return tuple(str(v) for v in _literals(module.ImageModel))


@functools.lru_cache(maxsize=1)
def _hints() -> dict[str, Any]:
    try:
        module = import_module("openai.types.image_generate_params")
    except ImportError:
        return {}
    return typing.get_type_hints(module.ImageGenerateParamsBase, include_extras=False)


def sdk_parameters() -> frozenset[str]:
    """The names of ``images.generate`` parameters the installed SDK takes (``prompt``, ``quality``...)."""
    return frozenset(_hints())


def sdk_parameter_values() -> dict[str, tuple[Any, ...]]:
    """Per parameter, the values the SDK's Literal types allow (parameters without a Literal are left out)."""
    out = {}
    for name, annotation in _hints().items():
        values = _literals(annotation)
        if values and name != "model":
            out[name] = values
    return out
