"""Model families of the diffusers backend: what each accepts, its defaults and its limits.

The family is read from the pipeline itself (its class and its components' configs), never from the
model's name: ``family_of_folder`` reads a saved folder's ``model_index.json`` and config files (so the plan
can check requests before anything is loaded), ``family_of_pipeline`` a loaded pipeline. Both go through
``detect``, which takes the pipeline class name and the component configs as plain dicts.

| family       | negative prompt          | guidance                       | size multiple | native | prompt tokens |
|--------------|--------------------------|--------------------------------|---------------|--------|---------------|
| sd1 / sd2    | yes                      | classifier-free                | 8 (and VAE)   | 512/768| CLIP 77       |
| sdxl         | yes (unset ≠ "": zeros)  | classifier-free                | 8 (and VAE)   | 1024   | CLIP 77       |
| sdxl-turbo   | yes                      | none (trained for 0)           | 8 (and VAE)   | 512    | CLIP 77       |
| flux-dev     | only with true_cfg_scale | distilled (embedded, not CFG)  | VAE factor ×2 | 1024   | T5 512        |
| flux-schnell | only with true_cfg_scale | none (no guidance embedding)   | VAE factor ×2 | 1024   | T5 256        |
| sd3          | yes                      | classifier-free                | VAE × patch   | 1024   | T5 256        |
| generic      | if the call takes one    | if the call takes one          | VAE factor    | —      | the tokenizer |
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Family", "detect", "family_of_folder", "family_of_pipeline", "FAMILY_COMPONENTS"]

# The components whose configs decide the family.
FAMILY_COMPONENTS = ("unet", "transformer", "vae", "scheduler")


@dataclass(frozen=True)
class Family:
    """What a family of pipelines accepts; read by validation, the call and the plan's warnings."""

    name: str
    label: str
    pipeline_class: str
    negative_prompt: str  # "yes", "true_cfg" (Flux: only with true_cfg_scale > 1) or "no"
    guidance: str  # "cfg" (classifier-free), "distilled" (Flux dev: a model input, not CFG) or "none"
    size_multiple: int
    native: tuple[int, int] | None  # the resolution it was trained at: other sizes degrade
    default_steps: int | None
    default_guidance: float | None
    t5_tokens: int | None = None  # the max_sequence_length the model was trained with; None: CLIP only
    t5_max: int = 512  # the most the pipeline takes
    cuda_dtype: str = "float16"
    options: frozenset[str] = frozenset()  # family-specific options the call takes

    @property
    def clip_truncation_matters(self) -> bool:
        """Only where CLIP is the whole text path: with T5 beside it, CLIP's 77 tokens drop nothing T5 reads."""
        return self.t5_tokens is None


_SD_OPTIONS = frozenset({"guidance_rescale", "clip_skip"})


def _vae_factor(configs: Mapping[str, Mapping[str, Any]]) -> int:
    vae = configs.get("vae") or {}
    blocks = vae.get("block_out_channels")
    return 2 ** (len(blocks) - 1) if blocks else 8


def detect(pipeline_class: str, configs: Mapping[str, Mapping[str, Any]], *,
           call_parameters: frozenset[str] | None = None) -> Family:
    """The family of a pipeline, from its class name and its components' configs.

    Example:
        >>> detect("FluxPipeline", {"transformer": {"guidance_embeds": True}, "vae": {"block_out_channels": [1] * 4}}).name
        'flux-dev'
    """
    factor = _vae_factor(configs)
    sd_multiple = math.lcm(8, factor)  # the SD and SDXL pipelines refuse sizes off a multiple of 8 outright
    unet = configs.get("unet") or {}
    transformer = configs.get("transformer") or {}
    scheduler = configs.get("scheduler") or {}

    def trained(default: tuple[int, int]) -> tuple[int, int]:
        # The denoiser's sample size × the VAE factor is the resolution it was built for (SD 1.5: 64 × 8).
        size = (unet or transformer).get("sample_size")
        return (size * factor, size * factor) if isinstance(size, int) else default

    if pipeline_class == "StableDiffusionPipeline":
        if unet.get("cross_attention_dim") == 1024:  # SD 2.x: OpenCLIP ViT-H; 768-v models predict v
            native = trained((768, 768) if scheduler.get("prediction_type") == "v_prediction" else (512, 512))
            return Family("sd2", "Stable Diffusion 2.x", pipeline_class, "yes", "cfg", sd_multiple, native, 50, 7.5,
                          options=_SD_OPTIONS)
        return Family("sd1", "Stable Diffusion 1.x", pipeline_class, "yes", "cfg", sd_multiple, trained((512, 512)), 50, 7.5,
                      options=_SD_OPTIONS)
    if pipeline_class == "StableDiffusionXLPipeline":
        # SDXL-Turbo ships the SDXL UNet with a trailing-timestep Euler a scheduler, for 1-4 steps at guidance 0.
        if scheduler.get("timestep_spacing") == "trailing":
            return Family("sdxl-turbo", "SDXL Turbo", pipeline_class, "yes", "none", sd_multiple, trained((512, 512)), 1, 0.0,
                          options=_SD_OPTIONS)
        return Family("sdxl", "Stable Diffusion XL", pipeline_class, "yes", "cfg", sd_multiple, trained((1024, 1024)), 50, 5.0,
                      options=_SD_OPTIONS)
    if pipeline_class == "FluxPipeline":
        flux_options = frozenset({"true_cfg_scale", "max_sequence_length"})
        if transformer.get("guidance_embeds"):
            return Family("flux-dev", "FLUX.1 [dev]", pipeline_class, "true_cfg", "distilled", factor * 2,
                          trained((1024, 1024)), 28, 3.5, t5_tokens=512, cuda_dtype="bfloat16", options=flux_options)
        return Family("flux-schnell", "FLUX.1 [schnell]", pipeline_class, "true_cfg", "none", factor * 2,
                      trained((1024, 1024)), 4, 0.0, t5_tokens=256, cuda_dtype="bfloat16", options=flux_options)
    if pipeline_class == "StableDiffusion3Pipeline":
        patch = int(transformer.get("patch_size") or 2)
        return Family("sd3", "Stable Diffusion 3 / 3.5", pipeline_class, "yes", "cfg", factor * patch, trained((1024, 1024)),
                      28, 7.0, t5_tokens=256, cuda_dtype="bfloat16",
                      options=frozenset({"max_sequence_length", "clip_skip"}))
    takes = call_parameters if call_parameters is not None else frozenset({"negative_prompt", "guidance_scale"})
    return Family("generic", pipeline_class, pipeline_class, "yes" if "negative_prompt" in takes else "no",
                  "cfg" if "guidance_scale" in takes else "none", factor, None, None, None)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def family_of_folder(folder: Path) -> Family | None:
    """The family of the pipeline saved in ``folder`` (its configs only, no weights), or None if none is there."""
    index = _read_json(folder / "model_index.json")
    if not index.get("_class_name"):
        return None
    configs = {name: _read_json(folder / name / ("scheduler_config.json" if name == "scheduler" else "config.json"))
               for name in FAMILY_COMPONENTS if name in index}
    call_parameters = None
    if index["_class_name"] not in _KNOWN:
        call_parameters = _call_parameters(index["_class_name"])
    return detect(index["_class_name"], configs, call_parameters=call_parameters)


def family_of_pipeline(pipe: Any) -> Family:
    configs = {name: dict(getattr(pipe, name).config) for name in FAMILY_COMPONENTS
               if getattr(pipe, name, None) is not None}
    return detect(type(pipe).__name__, configs, call_parameters=_call_parameters(type(pipe)))


_KNOWN = {"StableDiffusionPipeline", "StableDiffusionXLPipeline", "FluxPipeline", "StableDiffusion3Pipeline"}


def _call_parameters(pipeline: str | type) -> frozenset[str] | None:
    import inspect

    if isinstance(pipeline, str):
        import diffusers

        pipeline = getattr(diffusers, pipeline, None)
        if pipeline is None:
            return None
    return frozenset(inspect.signature(pipeline.__call__).parameters)
