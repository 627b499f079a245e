"""Loading diffusers pipelines: where a model string points, its family, dtype and memory options, the cache.

- ``resolve_model``: ``embedded:NAME``, a local ``save_pretrained`` folder, or a hub id ``owner/name[@revision]``.
- A hub id is loaded from the local Hugging Face cache when it is there; when it is not and the hub cannot
  be reached, loading fails at once with one clear line (``from_pretrained`` alone retries for ~30 s).
- dtype: fp32 on a CPU (fp16 kernels are missing there); on CUDA the family's (bf16 for Flux and SD3, fp16
  for SD and SDXL), unless the request says otherwise.
- Memory options (recorded with every run, as all options are): ``offload`` (``model`` or ``sequential``,
  CUDA only), ``vae_tiling``, ``vae_slicing``, ``attention_slicing``.
- ``PipelineCache`` keeps the last few loaded pipelines; a scheduler change makes a new pipeline object over
  the same components, so nothing is reloaded.
"""

from __future__ import annotations

import os
import socket
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ..errors import BackendError, UnsupportedRequestError
from ..models import embedded
from ..models.weights import weights_hash
from ..provenance.schedulers import scheduler_spec
from .diffusers_families import Family, family_of_folder, family_of_pipeline

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

__all__ = ["resolve_model", "hub_snapshot", "model_folder", "hub_reachable", "PipelineKey", "PipelineCache",
           "MEMORY_OPTIONS", "DTYPES"]

DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
          "bfloat16": "bfloat16", "bf16": "bfloat16"}
MEMORY_OPTIONS = ("offload", "vae_tiling", "vae_slicing", "attention_slicing")
OFFLOAD_MODES = ("model", "sequential")


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


def hub_snapshot(repo: str, revision: str | None) -> Path | None:
    """The local snapshot folder (named by its commit) of a hub id, or None where it is not cached."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, revision=revision, local_files_only=True))
    except Exception:  # not in the local cache (or no huggingface_hub): nothing local to read
        return None


def model_folder(model: str) -> Path | None:
    """Where the configs of ``model`` can be read without loading it: its folder, or its cached snapshot."""
    source, revision = resolve_model(model)
    return Path(source) if Path(source).is_dir() else hub_snapshot(source, revision)


_reachable: dict[str, str | None] = {}


def hub_reachable(timeout_s: float = 3.0) -> str | None:
    """None when the Hugging Face hub answers a TCP connect; else why not (offline mode, DNS, refused)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return "HF_HUB_OFFLINE is set"
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    if host not in _reachable:
        try:
            socket.create_connection((host, 443), timeout=timeout_s).close()
            _reachable[host] = None
        except OSError as exc:
            _reachable[host] = f"{host} cannot be reached ({type(exc).__name__}: {exc})"
    return _reachable[host]


def check_hub_model(model: str) -> None:
    """Fail at once, naming the fix, for a hub id that is neither cached nor downloadable from here."""
    source, revision = resolve_model(model)
    if Path(source).is_dir() or hub_snapshot(source, revision) is not None:
        return
    why = hub_reachable()
    if why:
        raise UnsupportedRequestError(
            f"diffusers model '{model}' is not in the local Hugging Face cache and cannot be downloaded: {why}. "
            f"Download it where there is a network (huggingface-cli download {source}) or use a local folder "
            f"saved with save_pretrained")


@dataclass(frozen=True)
class PipelineKey:
    """What makes two loaded pipelines different: other weights, dtype, device or memory hooks."""

    model: str
    device: str
    dtype: str
    revision: str | None
    variant: str | None
    memory: tuple[tuple[str, Any], ...]


def memory_options(options: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple((name, options[name]) for name in MEMORY_OPTIONS if name in options)


def check_memory_options(options: Mapping[str, Any], device: str) -> None:
    offload = options.get("offload")
    if offload is not None:
        if offload not in OFFLOAD_MODES:
            raise UnsupportedRequestError(f"diffusers: offload '{offload}' is not one of {', '.join(OFFLOAD_MODES)}")
        if not device.startswith("cuda"):
            raise UnsupportedRequestError(
                f"diffusers: offload '{offload}' moves weights between a CUDA GPU and the CPU, and this machine "
                f"runs diffusers on {device}; remove the offload option (on a CPU everything is in memory already)")
    for flag in ("vae_tiling", "vae_slicing"):
        if flag in options and not isinstance(options[flag], bool):
            raise UnsupportedRequestError(f"diffusers: {flag} is true or false, got {options[flag]!r}")
    slicing = options.get("attention_slicing")
    if slicing is not None and not (isinstance(slicing, bool) or slicing in ("auto", "max")
                                    or (isinstance(slicing, int) and slicing > 0)):
        raise UnsupportedRequestError(f"diffusers: attention_slicing is true, false, 'auto', 'max' or a positive "
                                      f"slice size, got {slicing!r}")


def _apply_memory_options(pipe: DiffusionPipeline, memory: Mapping[str, Any], device: str) -> DiffusionPipeline:
    offload = memory.get("offload")
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe = pipe.to(device)
    vae = getattr(pipe, "vae", None)
    if memory.get("vae_tiling") and vae is not None:
        vae.enable_tiling()
    if memory.get("vae_slicing") and vae is not None:
        vae.enable_slicing()
    slicing = memory.get("attention_slicing")
    if slicing and hasattr(pipe, "enable_attention_slicing"):
        pipe.enable_attention_slicing("auto" if slicing is True else slicing)
    return pipe


class PipelineCache:
    """The loaded pipelines, least recently used dropped past ``size``; thread-safe."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._pipelines: OrderedDict[PipelineKey, DiffusionPipeline] = OrderedDict()
        self._info: dict[PipelineKey, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: PipelineKey) -> DiffusionPipeline:
        with self._lock:
            if key in self._pipelines:
                self._pipelines.move_to_end(key)
                return self._pipelines[key]
        pipe, info = self._load(key)
        with self._lock:
            self._pipelines[key] = pipe
            self._info[key] = info
            while len(self._pipelines) > self.size:
                old, _ = self._pipelines.popitem(last=False)
                self._info.pop(old, None)
        return pipe

    def info(self, key: PipelineKey) -> dict[str, Any]:
        with self._lock:
            return dict(self._info.get(key, {}))

    def clear(self) -> None:
        with self._lock:
            self._pipelines.clear()
            self._info.clear()

    @staticmethod
    def _load(key: PipelineKey) -> tuple[DiffusionPipeline, dict[str, Any]]:
        import torch
        from diffusers import AutoPipelineForText2Image

        embedded.quiet_hf_logging()
        source, model_revision = resolve_model(key.model)
        revision = key.revision or model_revision
        if not Path(source).is_dir():
            check_hub_model(key.model)
        try:
            pipe = AutoPipelineForText2Image.from_pretrained(source, dtype=getattr(torch, key.dtype), revision=revision,
                                                             variant=key.variant)
        except (OSError, ValueError) as exc:
            raise BackendError(f"could not load diffusers model '{key.model}': {exc}. Offline, use a local "
                               f"folder saved with save_pretrained or an embedded model") from exc
        pipe = _apply_memory_options(pipe, dict(key.memory), key.device)
        pipe.set_progress_bar_config(disable=True)
        snapshot = Path(source) if Path(source).is_dir() else hub_snapshot(source, revision)
        family = family_of_pipeline(pipe)
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        processors = getattr(denoiser, "attn_processors", None) or {}
        info = {
            "model": key.model, "model_source": source, "revision": revision,
            # A hub id names whatever the hub serves today: record the commit that was loaded.
            "resolved_revision": snapshot.name if snapshot is not None and snapshot != Path(source) else None,
            "weights_hash": weights_hash(snapshot) if snapshot is not None else None,
            "pipeline_class": type(pipe).__name__, "family": family.name,
            "attention": type(next(iter(processors.values()))).__name__ if processors else None,
            **({"memory": dict(key.memory)} if key.memory else {}),
        }
        return pipe, info


def default_dtype(family: Family | None, device: str) -> str:
    if device == "cpu":
        return "float32"
    return family.cuda_dtype if family is not None and device.startswith("cuda") else "float16"


def folder_family(model: str) -> Family | None:
    """The family of ``model`` from its configs on disk, or None where nothing local can be read."""
    try:
        folder = model_folder(model)
    except UnsupportedRequestError:
        raise
    except Exception:
        return None
    return family_of_folder(folder) if folder is not None else None


def with_scheduler(pipe: DiffusionPipeline, name: str | None) -> DiffusionPipeline:
    """``pipe`` with the scheduler ``name`` (our short name or a diffusers class), sharing its components."""
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
        swapped = type(pipe)(**{**pipe.components, "scheduler": scheduler})
    swapped.set_progress_bar_config(disable=True)
    return swapped
