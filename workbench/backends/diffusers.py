"""Local generation with Hugging Face diffusers.

- Models: ``embedded:NAME`` (built in code, see ``workbench.models.embedded``), a local folder saved with
  ``save_pretrained``, or a hub id ``owner/name`` (optionally ``owner/name@revision``).
- Device and dtype: CUDA with fp16 (bf16 where ``options.dtype`` says so), Apple MPS with fp16,
  else CPU with fp32 (fp16 kernels are missing on CPU). ``WORKBENCH_DEVICE`` overrides.
- Determinism: one CPU ``torch.Generator`` per image, so an image depends on its seed, not on its
  batch neighbours (up to kernel-level differences across batch shapes; see docs/reproducibility).
- Batching: requests that differ only in prompt, negative prompt or seed share one pipeline call.
- Pipelines are cached per (model, device, dtype); a scheduler change reuses the loaded components.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..errors import BackendError, MissingDependencyError, OutOfMemoryError, UnsupportedRequestError
from ..models import embedded
from ..models.weights import weights_hash
from ..provenance.environment import base_environment, package_version
from ..provenance.schedulers import SCHEDULERS, scheduler_spec
from ..types import GeneratedImage, GenerationFailure, GenerationRequest, GenerationResult
from .base import Backend, Capabilities

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

__all__ = ["DiffusersBackend", "resolve_model"]

# Options a spec may pass to this backend (``options:`` or ``option.NAME`` factors).
ALLOWED_OPTIONS = {"revision", "dtype", "variant", "eta", "guidance_rescale", "clip_skip"}
_PipelineKey = tuple[str, str, str, str | None, str | None]  # model, device, dtype, revision, variant
_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}


def _torch() -> ModuleType:
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("torch", "diffusers") from None
    return torch


def resolve_model(model: str) -> tuple[str, str | None]:
    """(what to pass to ``from_pretrained``, revision) for a model string; builds embedded models."""
    if embedded.is_embedded(model):
        return str(embedded.build(model)), None
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise UnsupportedRequestError(
                f"'{model}' is a folder but holds no model_index.json; point at a pipeline saved with "
                f"save_pretrained (or a hub id like 'stable-diffusion-v1-5/stable-diffusion-v1-5')")
        return str(path.resolve()), None
    repo, _, revision = model.partition("@")
    return repo, revision or None


def _hub_snapshot(repo: str, revision: str | None) -> Path | None:
    """The local snapshot folder (named by its commit) that ``from_pretrained`` loaded a hub id from."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, revision=revision, local_files_only=True))
    except Exception:  # not in the local cache (a custom loader, a cleared cache): nothing to record
        return None


class DiffusersBackend(Backend):
    """Runs diffusers pipelines locally. ``device``/``dtype`` default to the best available."""

    name = "diffusers"

    def __init__(self, device: str | None = None, dtype: str | None = None, max_batch: int = 8,
                 cache_size: int = 2) -> None:
        self._device = device or os.environ.get("WORKBENCH_DEVICE")
        self._dtype = dtype
        self.max_batch = max_batch
        self.cache_size = cache_size
        # Keyed by (model, device, dtype, revision, variant): each loads other weights.
        self._pipelines: OrderedDict[_PipelineKey, DiffusionPipeline] = OrderedDict()
        self._info: dict[_PipelineKey, dict[str, Any]] = {}
        self._lock = threading.Lock()

    # -- capabilities and validation ---------------------------------------------------------------
    def capabilities(self, model: str) -> Capabilities:
        return Capabilities(seeds=True, max_batch=self.max_batch, schedulers=True, size_multiple=8)

    def estimate_seconds(self, request: GenerationRequest) -> float | None:
        # A prior only (the plan prefers logged latencies), and no torch import just to plan. The embedded
        # model on 2 CPU cores, batched: 0.17 s per 64x64 image at 12 steps, so ~14 ms per step per 64².
        if not embedded.is_embedded(request.model):
            return None
        return 0.014 * request.steps * (request.width * request.height) / (64 * 64)

    def validate(self, request: GenerationRequest) -> None:
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
        if dtype is not None and str(dtype) not in _DTYPES:
            raise UnsupportedRequestError(f"diffusers: unknown dtype '{dtype}'; use one of {sorted(set(_DTYPES))}")
        if embedded.is_embedded(request.model):
            embedded.embedded_path(request.model)  # raises for unknown names
        elif not Path(request.model).expanduser().exists() and request.model.count("/") != 1:
            raise UnsupportedRequestError(
                f"diffusers model '{request.model}' is neither a local folder nor a hub id like 'owner/name'; "
                f"embedded models: {', '.join(embedded.PREFIX + n for n in embedded.EMBEDDED_MODELS)}")

    def model_hash(self, model: str) -> str | None:
        """The weights hash of an embedded model or a local folder (hub ids: their name and revision)."""
        if embedded.is_embedded(model) or Path(model).expanduser().is_dir():
            return weights_hash(resolve_model(model)[0])
        return None

    def preflight(self, models: set[str]) -> None:
        _torch()
        try:
            import diffusers  # noqa: F401
        except ImportError:
            raise MissingDependencyError("diffusers", "diffusers") from None

    # -- device, dtype and the pipeline cache ------------------------------------------------------
    def device(self) -> str:
        if self._device:
            return self._device
        torch = _torch()
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"

    def dtype_name(self, request_dtype: str | None = None) -> str:
        if request_dtype or self._dtype:
            return _DTYPES[str(request_dtype or self._dtype)]
        return "float32" if self.device() == "cpu" else "float16"

    def pipeline(self, model: str, dtype: str | None = None, variant: str | None = None,
                 revision: str | None = None) -> DiffusionPipeline:
        """The loaded pipeline for ``model`` (cached; least recently used ones are dropped)."""
        torch = _torch()
        key = (model, self.device(), self.dtype_name(dtype), revision, variant)
        with self._lock:
            if key in self._pipelines:
                self._pipelines.move_to_end(key)
                return self._pipelines[key]
        embedded.quiet_hf_logging()
        from diffusers import AutoPipelineForText2Image

        source, model_revision = resolve_model(model)
        revision = revision or model_revision
        try:
            pipe = AutoPipelineForText2Image.from_pretrained(
                source, dtype=getattr(torch, key[2]), revision=revision, variant=variant)
        except (OSError, ValueError) as exc:
            raise BackendError(f"could not load diffusers model '{model}': {exc}. Offline, use a local "
                               f"folder saved with save_pretrained or an embedded model") from exc
        pipe = pipe.to(key[1])
        pipe.set_progress_bar_config(disable=True)
        if key[1] == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            # Leave a core for the PNG/MLflow workers: on 2 cores torch's default threading thrashes
            # (measured: quick start 13 s with one torch thread vs 30 s with the default, under load).
            torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
        snapshot = Path(source) if Path(source).is_dir() else _hub_snapshot(source, revision)
        info = {
            "model": model, "model_source": source, "revision": revision,
            # A hub id names whatever the hub serves today: record the commit that was loaded.
            "resolved_revision": snapshot.name if snapshot is not None and snapshot != Path(source) else None,
            "weights_hash": weights_hash(snapshot) if snapshot is not None else None,
            "pipeline_class": type(pipe).__name__,
            "attention": type(next(iter(pipe.unet.attn_processors.values()))).__name__
            if hasattr(pipe, "unet") and pipe.unet.attn_processors else None,
        }
        with self._lock:
            self._pipelines[key] = pipe
            self._info[key] = info
            while len(self._pipelines) > self.cache_size:
                old, _ = self._pipelines.popitem(last=False)
                self._info.pop(old, None)
        return pipe

    def _with_scheduler(self, pipe: DiffusionPipeline, name: str | None) -> DiffusionPipeline:
        if name is None:
            return pipe
        import diffusers

        cls_name, overrides = scheduler_spec(name)
        cls = getattr(diffusers, cls_name, None)
        if cls is None:
            raise UnsupportedRequestError(f"diffusers has no scheduler class '{cls_name}'")
        with warnings.catch_warnings():
            # SD1.x pipelines nag about old scheduler configs ("steps_offset", "clip_sample") on every swap.
            warnings.simplefilter("ignore", FutureWarning)
            scheduler = cls.from_config(pipe.scheduler.config, **overrides)
            # A new pipeline object over the same components: no reload, the cached one stays intact.
            swapped = type(pipe)(**{**pipe.components, "scheduler": scheduler})
        swapped.set_progress_bar_config(disable=True)
        return swapped

    def environment(self, model: str, request: GenerationRequest | None = None) -> dict[str, Any]:
        torch = _torch()
        opts = request.options if request else {}
        key = (model, self.device(), self.dtype_name(opts.get("dtype")), opts.get("revision"), opts.get("variant"))
        env = base_environment()
        env.update({
            "backend": "diffusers", "torch": torch.__version__, "diffusers": package_version("diffusers"),
            "transformers": package_version("transformers"), "device": self.device(), "dtype": key[2],
            "generator_device": "cpu",
            # What else decides the last bits: array → PIL conversion, kernel choice and thread count.
            "numpy": package_version("numpy"), "pillow": package_version("pillow"),
            "torch_threads": torch.get_num_threads(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        })
        if key[1].startswith("cuda"):
            env.update({"device_name": torch.cuda.get_device_name(), "cuda": torch.version.cuda,
                        "cudnn": str(torch.backends.cudnn.version())})
        else:
            env["device_name"] = key[1]
        env.update(self._info.get(key, {}))
        return env

    # -- generation ---------------------------------------------------------------------------------
    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        torch = _torch()
        import numpy as np
        from diffusers.utils import numpy_to_pil

        first = batch[0]
        opts = dict(first.options)
        pipe = self._with_scheduler(
            self.pipeline(first.model, opts.get("dtype"), opts.get("variant"), opts.get("revision")),
            first.scheduler)
        kwargs: dict[str, Any] = {}
        for name in ("eta", "guidance_rescale", "clip_skip"):
            if name in opts:
                kwargs[name] = opts[name]
        generators = [torch.Generator("cpu").manual_seed(int(r.seed if r.seed is not None else 0)) for r in batch]
        start = time.perf_counter()
        try:
            output = pipe(prompt=[r.prompt for r in batch], negative_prompt=[r.negative_prompt for r in batch],
                          num_inference_steps=first.steps, guidance_scale=first.guidance, width=first.width,
                          height=first.height, generator=generators, output_type="np", **kwargs)
        except torch.cuda.OutOfMemoryError as exc:
            import gc

            gc.collect()
            torch.cuda.empty_cache()  # give the smaller retry the memory back
            raise OutOfMemoryError(f"CUDA out of memory for a batch of {len(batch)}: {exc}") from exc
        latency = (time.perf_counter() - start) / len(batch)
        arrays = output.images
        nsfw = getattr(output, "nsfw_content_detected", None) or [False] * len(batch)
        # One fingerprint for the whole batch: its requests share model, options and scheduler (batch key).
        batch_env = {**self.environment(first.model, first), "scheduler": type(pipe.scheduler).__name__,
                     "scheduler_config": dict(pipe.scheduler.config), "batch_size": len(batch)}
        results: list[GenerationResult] = []
        for index, (request, array) in enumerate(zip(batch, arrays, strict=True)):
            env = {**batch_env, "batch_index": index}
            if np.isnan(array).any():
                results.append(GenerationFailure(
                    request, "the output contains NaN values (a black image); with fp16, try dtype bf16 "
                    "or fp32, or an fp16-safe VAE", error_type="NaNOutput", latency_s=latency, environment=env))
                continue
            if nsfw[index]:
                results.append(GenerationFailure(
                    request, "the pipeline's safety checker flagged the image (it returned a black image)",
                    status="BLOCKED", error_type="SafetyChecker", latency_s=latency, environment=env))
                continue
            image = numpy_to_pil(array[None, ...])[0]
            flags, notes = set(), {}
            if float(np.asarray(image).max()) <= 2:
                flags.add("black")
                notes["black"] = "every pixel is black or nearly so"
            truncated = self._truncation(pipe, request.prompt)
            if truncated:
                flags.add("truncated_prompt")
                notes["truncated_prompt"] = truncated
            results.append(GeneratedImage(request=request, image=image, latency_s=latency, flags=frozenset(flags),
                                          notes=notes, environment=env, batch_size=len(batch), batch_index=index))
        return results

    @staticmethod
    def _truncation(pipe: DiffusionPipeline, prompt: str) -> str | None:
        tokenizer = getattr(pipe, "tokenizer", None)
        if tokenizer is None:
            return None
        ids = tokenizer(prompt, truncation=False).input_ids
        limit = tokenizer.model_max_length
        if len(ids) <= limit:
            return None
        dropped = tokenizer.decode(ids[limit - 1:-1])
        return f"{len(ids)} tokens, the text encoder keeps {limit}; dropped: '{dropped}'"

    def close(self) -> None:
        with self._lock:
            self._pipelines.clear()
            self._info.clear()
