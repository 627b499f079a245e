"""Generation metadata inside PNG files.

Two text chunks, so a loose file can find its way back:

- ``parameters``: the AUTOMATIC1111 web UI format (prompt, ``Negative prompt: …``, then one line of
  ``Key: value`` pairs), so A1111, Forge, civitai and friends read our images;
- ``workbench``: canonical JSON with the full request, run key, MLflow run id and tracking URI,
  environment fingerprint, revised prompt and flags (format ``workbench/1``).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from PIL import Image, PngImagePlugin

from .hashing import canonical_json
from .schedulers import a1111_sampler_name
from .types import GeneratedImage, GenerationRequest

__all__ = ["FORMAT", "a1111_parameters", "workbench_metadata", "encode_png", "public_uri"]

FORMAT = "workbench/1"


def public_uri(uri: str | None) -> str | None:
    """A tracking URI without credentials (user:password@ never goes into files or logs)."""
    if not uri or "@" not in uri:
        return uri
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _quote(value: Any) -> str:
    # A1111's own rule (modules/generation_parameters_copypaste.quote): JSON-quote when needed.
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text and '"' not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def a1111_parameters(request: GenerationRequest, extra: Mapping[str, Any] | None = None) -> str:
    """The ``parameters`` text A1111 writes and parses for ``request``."""
    pairs: dict[str, Any] = {"Steps": request.steps}
    sampler = a1111_sampler_name(request.scheduler)
    if sampler:
        pairs["Sampler"] = sampler
    pairs["CFG scale"] = float(request.guidance)
    pairs["Seed"] = request.seed if request.seed is not None else -1
    pairs["Size"] = f"{request.width}x{request.height}"
    pairs["Model"] = request.model
    pairs["Backend"] = request.backend
    if request.template:
        pairs["Template"] = f"{request.template}@{request.template_version}"
    pairs.update(extra or {})
    lines = [request.prompt]
    if request.negative_prompt:
        lines.append(f"Negative prompt: {request.negative_prompt}")
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in pairs.items() if v is not None))
    return "\n".join(lines)


def workbench_metadata(result: GeneratedImage, *, run_id: str | None, tracking_uri: str | None,
                       experiment_id: str | None = None) -> dict[str, Any]:
    """The ``workbench`` chunk's content: everything needed to run the request again."""
    request = result.request
    return {
        "format": FORMAT,
        "run_key": request.run_key,
        "run_id": run_id,
        "experiment_id": experiment_id,
        "tracking_uri": public_uri(tracking_uri),
        "request": request.to_dict(),
        "revised_prompt": result.revised_prompt,
        "flags": sorted(result.flags),
        "backend_ids": dict(result.backend_ids),
        "environment": dict(result.environment),
        "batch": {"size": result.batch_size, "index": result.batch_index},
    }


def encode_png(image: Image.Image, *, parameters: str, workbench: Mapping[str, Any],
               compress_level: int = 6) -> bytes:
    """PNG bytes of ``image`` with both text chunks (iTXt, so any Unicode prompt survives)."""
    info = PngImagePlugin.PngInfo()
    info.add_itxt("parameters", parameters)
    info.add_itxt("workbench", canonical_json(_jsonable(workbench)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=compress_level)
    return buffer.getvalue()


def _jsonable(value: Any) -> Any:
    """Plain JSON values only: scheduler configs may hold tuples, inf or numpy scalars."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "item"):  # numpy scalar
        return _jsonable(value.item())
    return str(value)
