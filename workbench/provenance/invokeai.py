"""InvokeAI's PNG metadata: the ``invokeai_metadata`` chunk turned into a request.

InvokeAI writes the fields of its ``core_metadata`` node (``invokeai/app/invocations/metadata.py``,
``CoreMetadataInvocation``) as JSON in the ``invokeai_metadata`` text chunk
(``image_files_disk.py``): ``positive_prompt``, ``negative_prompt``, ``width``, ``height``, ``seed``,
``cfg_scale``, ``steps``, ``scheduler``, ``clip_skip``, ``model`` (``{key, hash, name, base, type}``),
``generation_mode`` and what else shaped the image (``loras``, ``controlnets``, ``vae``, ``hrf_*``...).
``read_invokeai`` maps the first group onto a request and names the rest in ``not_reproduced``.

InvokeAI's scheduler names are its own (``SCHEDULER_MAP`` in
``invokeai/backend/stable_diffusion/schedulers/schedulers.py``: a diffusers class and config each); each
maps to ours where the diffusers class and config are the same. Its ``clip_skip`` counts removed layers,
as diffusers' does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..errors import MetadataError
from ..types import GenerationRequest
from .imported import Imported

__all__ = ["read_invokeai", "INVOKEAI_SCHEDULERS", "METADATA_KEY"]

METADATA_KEY = "invokeai_metadata"
# InvokeAI scheduler -> ours, where InvokeAI's diffusers class and config equal ours.
INVOKEAI_SCHEDULERS = {
    "ddim": "ddim", "ddpm": "ddpm", "lms": "lms", "lms_k": "lms_karras", "pndm": "pndm", "heun": "heun",
    "heun_k": "heun_karras", "euler": "euler", "euler_k": "euler_karras", "euler_a": "euler_a", "kdpm_2": "dpm2",
    "kdpm_2_k": "dpm2_karras", "kdpm_2_a": "dpm2_a", "kdpm_2_a_k": "dpm2_a_karras", "dpmpp_2s": "dpm++_sde",
    "dpmpp_2s_k": "dpm++_sde_karras", "dpmpp_2m": "dpm++_2m", "dpmpp_2m_k": "dpm++_2m_karras",
    "dpmpp_2m_sde": "dpm++_2m_sde", "dpmpp_2m_sde_k": "dpm++_2m_sde_karras", "unipc": "unipc", "lcm": "lcm",
}
# Schedulers InvokeAI has and we do not: their diffusers class and config, for the message.
_UNMAPPED = {"deis": "DEISMultistepScheduler", "deis_k": "DEISMultistepScheduler with Karras sigmas",
             "dpmpp_3m": "DPMSolverMultistepScheduler with solver_order=3",
             "dpmpp_3m_k": "DPMSolverMultistepScheduler with solver_order=3 and Karras sigmas",
             "dpmpp_sde": "DPMSolverSDEScheduler", "dpmpp_sde_k": "DPMSolverSDEScheduler with Karras sigmas",
             "unipc_k": "UniPCMultistepScheduler with Karras sigmas", "er_sde": "InvokeAI's ERSDEScheduler",
             "tcd": "TCDScheduler"}
_USED = {"positive_prompt", "negative_prompt", "width", "height", "seed", "cfg_scale", "steps", "scheduler",
         "clip_skip", "model", "generation_mode", "app_version"}
# Fields that do not change the image, or only say it was left at its default.
_INFO = {"rand_device", "seamless_x", "seamless_y", "cfg_rescale_multiplier", "positive_style_prompt",
         "negative_style_prompt", "hrf_enabled", "regions", "canvas_v2_metadata", "ref_images"}
_TEXT_TO_IMAGE = ("txt2img", "sdxl_txt2img")


def _field(data: Mapping[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    if value is None:
        raise MetadataError(f"the InvokeAI metadata has no '{key}'; it is needed to rebuild the request")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise MetadataError(f"the InvokeAI metadata's '{key}: {value!r}' is not a {kind.__name__}") from None


def read_invokeai(text: str, *, backend: str | None = None, model: str | None = None) -> Imported:
    """The request an InvokeAI ``invokeai_metadata`` JSON describes, as far as it maps onto one."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MetadataError(f"the '{METADATA_KEY}' chunk is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise MetadataError(f"the '{METADATA_KEY}' chunk is not a JSON object")
    mode = data.get("generation_mode")
    if mode is not None and mode not in _TEXT_TO_IMAGE:
        raise MetadataError(f"the InvokeAI image was made by '{mode}', not text-to-image: it needs an input image "
                            f"the file does not hold, so it cannot be turned into a request")
    name = str(_field(data, "scheduler", str))
    if name in _UNMAPPED:
        raise MetadataError(f"the InvokeAI scheduler '{name}' ({_UNMAPPED[name]}) has no equivalent here; mapped "
                            f"schedulers: {', '.join(INVOKEAI_SCHEDULERS)}")
    if name not in INVOKEAI_SCHEDULERS:
        raise MetadataError(f"the InvokeAI scheduler '{name}' is not one InvokeAI has; mapped schedulers: "
                            f"{', '.join(INVOKEAI_SCHEDULERS)}")
    info = data.get("model") if isinstance(data.get("model"), dict) else {}
    checkpoint = info.get("name") or info.get("model_name")
    if not (model or checkpoint):
        raise MetadataError("the InvokeAI metadata names no model; say which model to use (model=..., or --model)")
    backend = backend or "diffusers"
    options: dict[str, Any] = {}
    skip = data.get("clip_skip")
    if isinstance(skip, int) and not isinstance(skip, bool) and skip >= 1 and backend == "diffusers":
        options["clip_skip"] = skip
    request = GenerationRequest(
        backend=backend, model=model or str(checkpoint), prompt=str(_field(data, "positive_prompt", str)),
        negative_prompt=str(data.get("negative_prompt") or ""), seed=_field(data, "seed", int),
        width=_field(data, "width", int), height=_field(data, "height", int), steps=_field(data, "steps", int),
        guidance=_field(data, "cfg_scale", float), scheduler=INVOKEAI_SCHEDULERS[name], options=options)
    not_reproduced = {k: json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v
                      for k, v in data.items() if k not in _USED and k not in _INFO and v not in (None, [], {}, "")}
    if data.get("hrf_enabled"):
        not_reproduced["hrf_enabled"] = "true"
    notes = []
    if model and checkpoint and model != checkpoint:
        notes.append(f"model: the file names '{checkpoint}' ({info.get('base', '?')}); regenerated with '{model}'")
    if data.get("rand_device") not in (None, "cpu"):
        notes.append(f"InvokeAI drew the noise on '{data['rand_device']}'; the workbench draws it on the CPU")
    return Imported("invokeai", request, not_reproduced, tuple(notes))
