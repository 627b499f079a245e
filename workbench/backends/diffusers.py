"""Local generation with Hugging Face diffusers, for every family a user brings (SD 1.x/2.x, SDXL, Flux, SD3, …).

- Models: ``embedded:NAME``, a local folder saved with ``save_pretrained``, or a hub id ``owner/name[@revision]``
  (``diffusers_pipelines``). The family is read from the pipeline's class and configs, and decides what a
  request may ask (``diffusers_families``): checked at plan time, recorded with every run.
- The image is the one plain diffusers makes for the same arguments: nothing is sent that the request did
  not ask for (an unset negative prompt is not sent as "", which would turn off SDXL's zeroed negative).
- Determinism: one CPU ``torch.Generator`` per image, so an image depends on its seed, not on its batch
  neighbours (up to kernel-level differences across batch shapes; see docs/reproducibility).
- Batching: requests that differ only in prompt, negative prompt or seed share one pipeline call.
- LoRAs: loaded once per pipeline as named adapters and switched per call (``diffusers_loras``).
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Hashable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..errors import MissingDependencyError, OutOfMemoryError, UnsupportedRequestError
from ..hashing import canonical_json
from ..models import embedded
from ..models.weights import weights_hash
from ..provenance.environment import base_environment, package_version
from ..provenance.schedulers import SCHEDULERS, scheduler_spec
from ..types import GeneratedImage, GenerationFailure, GenerationRequest, GenerationResult, Lora
from .base import Backend, Capabilities
from .diffusers_families import Family, family_of_pipeline
from .diffusers_loras import LoraSwitch, lora_file, lora_hash
from .diffusers_pipelines import DTYPES, MEMORY_OPTIONS, PipelineCache, PipelineKey, check_hub_model, \
    check_memory_options, default_dtype, folder_family, memory_options, resolve_model, with_scheduler

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

__all__ = ["DiffusersBackend", "resolve_model"]

# Options a spec may pass to this backend (``options:`` or ``option.NAME`` factors); the family-specific
# ones (true_cfg_scale, max_sequence_length, guidance_rescale, clip_skip) only where the family takes them.
GENERIC_OPTIONS = {"revision", "dtype", "variant", "eta", *MEMORY_OPTIONS}
FAMILY_OPTIONS = {"true_cfg_scale", "max_sequence_length", "guidance_rescale", "clip_skip"}
ALLOWED_OPTIONS = GENERIC_OPTIONS | FAMILY_OPTIONS


def _torch() -> ModuleType:
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("torch", "diffusers") from None
    return torch


def release_device_memory(torch: Any, device: str) -> None:
    """Free what a failed call left behind, so that the halved batch gets the memory back."""
    import gc

    gc.collect()  # the failed call's tensors are held by its traceback's frames until collected
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    elif device == "mps":
        torch.mps.empty_cache()


class DiffusersBackend(Backend):
    """Runs diffusers pipelines locally. ``device``/``dtype`` default to the best available."""

    name = "diffusers"

    def __init__(self, device: str | None = None, dtype: str | None = None, max_batch: int = 8,
                 cache_size: int = 2) -> None:
        self._device = device or os.environ.get("WORKBENCH_DEVICE")
        self._dtype = dtype
        self.max_batch = max_batch
        self._cache = PipelineCache(cache_size)
        self._loras = LoraSwitch()
        self._families: dict[str, Family | None] = {}
        self._lora_hashes: dict[tuple[str, str | None], str] = {}

    # -- what a model is and accepts ----------------------------------------------------------------
    def family(self, model: str) -> Family | None:
        """The family of ``model`` from its configs on disk (None for a hub id that is not cached)."""
        if model not in self._families:
            self._families[model] = folder_family(model)
        return self._families[model]

    def capabilities(self, model: str) -> Capabilities:
        family = self.family(model) if self._is_known(model) else None
        return Capabilities(seeds=True, max_batch=self.max_batch, schedulers=True,
                            size_multiple=family.size_multiple if family else 8)

    @staticmethod
    def _is_known(model: str) -> bool:
        return embedded.is_embedded(model) or Path(model).expanduser().exists() or model.count("/") == 1

    def defaults(self, model: str) -> dict[str, Any]:
        """The family's default steps and guidance and the size it was trained at, for a spec that sets none."""
        family = self.family(model) if self._is_known(model) else None
        if family is None:
            return {}
        out = {k: v for k, v in (("steps", family.default_steps), ("guidance", family.default_guidance))
               if v is not None}
        if family.native:
            out["width"], out["height"] = family.native
        return out

    def estimate_seconds(self, request: GenerationRequest) -> float | None:
        # A prior only (the plan prefers logged latencies), and no torch import just to plan. The embedded
        # model on 2 CPU cores, batched: 0.17 s per 64x64 image at 12 steps, so ~14 ms per step per 64².
        if not embedded.is_embedded(request.model):
            return None
        return 0.014 * request.steps * (request.width * request.height) / (64 * 64)

    def validate(self, request: GenerationRequest) -> None:
        if embedded.is_embedded(request.model):
            embedded.embedded_path(request.model)  # raises for unknown names
        elif not Path(request.model).expanduser().exists() and request.model.count("/") != 1:
            raise UnsupportedRequestError(
                f"diffusers model '{request.model}' is neither a local folder nor a hub id like 'owner/name'; "
                f"embedded models: {', '.join(embedded.PREFIX + n for n in embedded.EMBEDDED_MODELS)}")
        else:
            check_hub_model(request.model)
        super().validate(request)
        if request.scheduler is not None:
            try:
                scheduler_spec(request.scheduler)
            except KeyError:
                raise UnsupportedRequestError(
                    f"unknown scheduler '{request.scheduler}'; use one of {', '.join(SCHEDULERS)} "
                    f"or a diffusers class name such as 'EulerDiscreteScheduler'") from None
        unknown = sorted(set(request.options) - ALLOWED_OPTIONS)
        if unknown:
            raise UnsupportedRequestError(
                f"diffusers: unknown option(s) {unknown}; allowed options: {', '.join(sorted(ALLOWED_OPTIONS))}")
        dtype = request.options.get("dtype")
        if dtype is not None and str(dtype) not in DTYPES:
            raise UnsupportedRequestError(f"diffusers: unknown dtype '{dtype}'; use one of {sorted(set(DTYPES))}")
        check_memory_options(request.options, self.device())
        family = self.family(request.model)
        if family is not None:
            self._validate_for_family(request, family)
        for lora in request.loras:
            lora_file(lora.source, lora.weight_name)

    @staticmethod
    def _validate_for_family(request: GenerationRequest, family: Family) -> None:
        misplaced = sorted(name for name in set(request.options) & FAMILY_OPTIONS if name not in family.options)
        if misplaced:
            raise UnsupportedRequestError(
                f"diffusers: {family.label} ({family.pipeline_class}) takes no option(s) {misplaced}; its options: "
                f"{', '.join(sorted(family.options | GENERIC_OPTIONS))}")
        length = request.options.get("max_sequence_length")
        if length is not None and (isinstance(length, bool) or not isinstance(length, int)
                                   or not 1 <= length <= family.t5_max):
            raise UnsupportedRequestError(f"diffusers: max_sequence_length is T5's prompt length, 1 to "
                                          f"{family.t5_max} tokens for {family.label}; got {length!r}")
        true_cfg = request.options.get("true_cfg_scale")
        if true_cfg is not None and (isinstance(true_cfg, bool) or not isinstance(true_cfg, (int, float))
                                     or true_cfg < 1):
            raise UnsupportedRequestError(f"diffusers: true_cfg_scale is a number ≥ 1 (1 turns it off); got {true_cfg!r}")

    def uncontrolled(self, request: GenerationRequest) -> dict[str, str]:
        out = super().uncontrolled(request)
        family = self.family(request.model) if self._is_known(request.model) else None
        if family is None:
            return out
        if request.negative_prompt and family.negative_prompt == "true_cfg" and \
                float(request.options.get("true_cfg_scale", 1.0)) <= 1:
            out["negative_prompt"] = (f"not sent: {family.label} uses a negative prompt only with true CFG; set "
                                      f"option true_cfg_scale > 1 (e.g. 4) to use it (each step then runs twice)")
        if family.name == "flux-schnell":
            out["guidance"] = "ignored: FLUX.1 [schnell] has no guidance input (it is distilled for 1-4 steps)"
        return out

    def warnings(self, request: GenerationRequest) -> list[str]:
        family = self.family(request.model) if self._is_known(request.model) else None
        if family is None:
            return []
        out = []
        if family.native and (request.width, request.height) != family.native and \
                abs(request.width * request.height - family.native[0] * family.native[1]) > 0.5 * family.native[0] ** 2:
            out.append(f"{request.model}: {family.label} was trained at {family.native[0]}x{family.native[1]}; "
                       f"{request.width}x{request.height} is far from it, expect worse images")
        if family.default_steps is not None and family.default_steps <= 4 and request.steps > 8:
            out.append(f"{request.model}: {family.label} is distilled for 1-4 steps; {request.steps} steps only "
                       f"cost time")
        return out

    def model_hash(self, model: str) -> str | None:
        """The weights hash of an embedded model or a local folder (hub ids: their name and revision)."""
        if embedded.is_embedded(model) or Path(model).expanduser().is_dir():
            return weights_hash(resolve_model(model)[0])
        return None

    def resolve_loras(self, loras: tuple[Lora, ...]) -> tuple[Lora, ...]:
        """The LoRAs with the hash of their weights (the run key holds the hash, not the path)."""
        out = []
        for lora in loras:
            key = (lora.source, lora.weight_name)
            if key not in self._lora_hashes:
                self._lora_hashes[key] = lora_hash(lora_file(lora.source, lora.weight_name))
            out.append(lora if lora.hash == self._lora_hashes[key] else
                       Lora(lora.name, lora.source, lora.scale, lora.weight_name, lora.enabled, self._lora_hashes[key]))
        return tuple(out)

    def batch_key(self, request: GenerationRequest) -> Hashable:
        # A call sends a negative prompt for all its images or none (an unset one is not ""), and one set of
        # active adapters.
        return canonical_json({"base": super().batch_key(request), "negative": bool(request.negative_prompt),
                               "loras": [l.key_fields() for l in request.loras if l.enabled]})

    def preflight(self, models: set[str]) -> None:
        _torch()
        try:
            import diffusers  # noqa: F401
        except ImportError:
            raise MissingDependencyError("diffusers", "diffusers") from None

    # -- device, dtype, pipelines --------------------------------------------------------------------
    def device(self) -> str:
        if self._device:
            return self._device
        torch = _torch()
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"

    def dtype_name(self, request_dtype: str | None = None, model: str | None = None) -> str:
        if request_dtype or self._dtype:
            return DTYPES[str(request_dtype or self._dtype)]
        return default_dtype(self.family(model) if model and self._is_known(model) else None, self.device())

    def _key(self, request: GenerationRequest) -> PipelineKey:
        opts = request.options
        return PipelineKey(request.model, self.device(), self.dtype_name(opts.get("dtype"), request.model),
                           opts.get("revision"), opts.get("variant"), memory_options(opts))

    def pipeline(self, model: str, dtype: str | None = None, variant: str | None = None,
                 revision: str | None = None) -> DiffusionPipeline:
        """The loaded pipeline for ``model`` (cached; least recently used ones are dropped)."""
        pipe = self._cache.get(PipelineKey(model, self.device(), self.dtype_name(dtype, model), revision, variant, ()))
        self._threads_for(pipe)
        return pipe

    def _threads_for(self, pipe: DiffusionPipeline) -> None:
        torch = _torch()
        if self.device() == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            # Leave a core for the PNG/MLflow workers: on 2 cores torch's default threading thrashes
            # (measured: quick start 13 s with one torch thread vs 30 s with the default, under load).
            torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))

    def environment(self, model: str, request: GenerationRequest | None = None) -> dict[str, Any]:
        torch = _torch()
        key = self._key(request) if request is not None else PipelineKey(
            model, self.device(), self.dtype_name(None, model), None, None, ())
        env = base_environment()
        env.update({
            "backend": "diffusers", "torch": torch.__version__, "diffusers": package_version("diffusers"),
            "transformers": package_version("transformers"), "peft": package_version("peft"),
            "device": key.device, "dtype": key.dtype, "generator_device": "cpu",
            # What else decides the last bits: array → PIL conversion, kernel choice and thread count.
            "numpy": package_version("numpy"), "pillow": package_version("pillow"),
            "torch_threads": torch.get_num_threads(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        })
        if key.device.startswith("cuda"):
            env.update({"device_name": torch.cuda.get_device_name(), "cuda": torch.version.cuda,
                        "cudnn": str(torch.backends.cudnn.version())})
        else:
            env["device_name"] = key.device
        env.update(self._cache.info(key))
        return env

    # -- generation ---------------------------------------------------------------------------------
    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        torch = _torch()
        first = batch[0]
        key = self._key(first)
        loaded = self._cache.get(key)
        self._threads_for(loaded)
        pipe = with_scheduler(loaded, first.scheduler)
        family = family_of_pipeline(loaded)
        self._loras.apply(pipe, first.loras)
        kwargs = _call_arguments(pipe, family, batch)
        start = time.perf_counter()
        try:
            output = pipe(**kwargs)
        except torch.OutOfMemoryError as exc:  # CUDA's (torch.cuda.OutOfMemoryError is this class) and others'
            del kwargs
            release_device_memory(torch, self.device())  # give the smaller retry the memory back
            raise OutOfMemoryError(f"out of device memory for a batch of {len(batch)}: {exc}") from exc
        latency = (time.perf_counter() - start) / len(batch)
        sent = {k: v for k, v in kwargs.items() if k not in ("prompt", "negative_prompt", "generator", "output_type")}
        env = {**self.environment(first.model, first), "scheduler": type(pipe.scheduler).__name__,
               "scheduler_config": dict(pipe.scheduler.config), "family": family.name, "call": sent}
        if first.loras:
            env["loras"] = [{**lora.to_dict(), "adapter": self._loras.adapter_name(lora)} for lora in first.loras]
        return _results(pipe, family, batch, output, latency, env, kwargs)

    def close(self) -> None:
        self._cache.clear()


def _call_arguments(pipe: DiffusionPipeline, family: Family, batch: Sequence[GenerationRequest]) -> dict[str, Any]:
    """The keyword arguments of the pipeline call: what the requests ask, in the family's terms, nothing more."""
    import torch

    first = batch[0]
    opts = first.options
    takes = inspect.signature(type(pipe).__call__).parameters
    kwargs: dict[str, Any] = {
        "prompt": [r.prompt for r in batch], "num_inference_steps": first.steps, "width": first.width,
        "height": first.height, "output_type": "np",
        "generator": [torch.Generator("cpu").manual_seed(int(r.seed if r.seed is not None else 0)) for r in batch],
    }
    if "guidance_scale" in takes:
        kwargs["guidance_scale"] = first.guidance
    negative = [r.negative_prompt for r in batch]
    wants_negative = any(negative) and "negative_prompt" in takes
    if family.negative_prompt == "true_cfg":
        wants_negative = wants_negative and float(opts.get("true_cfg_scale", 1.0)) > 1
    if wants_negative:  # else not sent at all: "" is not the same as none for SDXL (force_zeros_for_empty_prompt)
        kwargs["negative_prompt"] = negative
    for name in ("eta", "guidance_rescale", "clip_skip", "true_cfg_scale", "max_sequence_length"):
        if name in opts and name in takes:
            kwargs[name] = opts[name]
    return kwargs


def _results(pipe: DiffusionPipeline, family: Family, batch: Sequence[GenerationRequest], output: Any,
             latency: float, env: dict[str, Any], kwargs: dict[str, Any]) -> list[GenerationResult]:
    import numpy as np
    from diffusers.utils import numpy_to_pil

    nsfw = getattr(output, "nsfw_content_detected", None) or [False] * len(batch)
    results: list[GenerationResult] = []
    for index, (request, array) in enumerate(zip(batch, output.images, strict=True)):
        where = {"batch_size": len(batch), "batch_index": index}
        if np.isnan(array).any():
            results.append(GenerationFailure(
                request, "the output contains NaN values (a black image); with fp16, try dtype bf16 "
                "or fp32, or an fp16-safe VAE", error_type="NaNOutput", latency_s=latency, environment=env, **where))
            continue
        if nsfw[index]:
            results.append(GenerationFailure(
                request, "the pipeline's safety checker flagged the image (it returned a black image)",
                status="BLOCKED", error_type="SafetyChecker", latency_s=latency, environment=env, **where))
            continue
        image = numpy_to_pil(array[None, ...])[0]
        flags, notes = set(), {}
        if float(np.asarray(image).max()) <= 2:
            flags.add("black")
            notes["black"] = "every pixel is black or nearly so"
        truncated = _truncation(pipe, family, request.prompt, kwargs)
        if truncated:
            flags.add("truncated_prompt")
            notes["truncated_prompt"] = truncated
        results.append(GeneratedImage(request=request, image=image, latency_s=latency, flags=frozenset(flags),
                                      notes=notes, environment=env, **where))
    return results


def _truncation(pipe: DiffusionPipeline, family: Family, prompt: str, kwargs: dict[str, Any]) -> str | None:
    """What the text encoder that reads the whole prompt drops: CLIP's 77 tokens where CLIP is the whole text
    path (SD, SDXL), T5's ``max_sequence_length`` where T5 reads the prompt too (Flux, SD3)."""
    if family.clip_truncation_matters:
        tokenizer, limit = getattr(pipe, "tokenizer", None), None
    else:
        tokenizer = getattr(pipe, "tokenizer_3", None) or getattr(pipe, "tokenizer_2", None)
        limit = kwargs.get("max_sequence_length") or \
            inspect.signature(type(pipe).__call__).parameters["max_sequence_length"].default
    if tokenizer is None:
        return None
    limit = limit or tokenizer.model_max_length
    ids = tokenizer(prompt, truncation=False).input_ids
    if len(ids) <= limit:
        return None
    dropped = tokenizer.decode(ids[limit - 1:-1])
    which = "T5 (max_sequence_length)" if not family.clip_truncation_matters else "the text encoder"
    return f"{len(ids)} tokens, {which} keeps {limit}; dropped: '{dropped}'"
