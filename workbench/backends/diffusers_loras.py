"""LoRAs on a loaded diffusers pipeline: finding the weights, their hash, and switching adapters per call.

A pipeline is loaded once; each LoRA is loaded into it once, as a named peft adapter
(``load_lora_weights(..., adapter_name=...)``), and every call then sets which adapters are active at
which scale with diffusers' adapter API (``set_adapters`` / ``disable_lora``): sweeping a LoRA's scale or
turning it on and off never reloads anything.

Sources: a ``.safetensors`` file, a folder holding one (``weight_name`` picks it when there are several;
diffusers' own ``pytorch_lora_weights.safetensors`` otherwise), or a hub id (the local cache only when the
hub cannot be reached). The hash is A1111's: SHA-256 of a safetensors file's tensor data, past its JSON
header (the "AddNet" hash), so ``Lora hashes:`` in our A1111 text matches what A1111 writes for the same file.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UnsupportedRequestError
from ..types import Lora

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

__all__ = ["lora_file", "lora_hash", "LoraSwitch", "DEFAULT_WEIGHT_NAME"]

DEFAULT_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def lora_file(source: str, weight_name: str | None = None) -> Path:
    """The weights file a LoRA source names; a clear error when there is none."""
    path = Path(source).expanduser()
    if path.is_file():
        return path.resolve()
    if path.is_dir():
        if weight_name:
            candidate = path / weight_name
            if not candidate.is_file():
                raise UnsupportedRequestError(f"LoRA folder {path} holds no '{weight_name}'; it holds "
                                              f"{sorted(p.name for p in path.glob('*.safetensors')) or 'no .safetensors'}")
            return candidate.resolve()
        files = sorted(path.glob("*.safetensors"))
        if (path / DEFAULT_WEIGHT_NAME).is_file():
            return (path / DEFAULT_WEIGHT_NAME).resolve()
        if len(files) == 1:
            return files[0].resolve()
        raise UnsupportedRequestError(f"LoRA folder {path} holds {len(files)} .safetensors files "
                                      f"({', '.join(f.name for f in files) or 'none'}); name one with weight_name")
    if source.count("/") == 1 and not source.startswith((".", "/", "~")):
        return _hub_file(source, weight_name)
    raise UnsupportedRequestError(f"LoRA '{source}' is neither a file, a folder nor a hub id like 'owner/name'")


def _hub_file(repo: str, weight_name: str | None) -> Path:
    from huggingface_hub import hf_hub_download

    from .diffusers_pipelines import hub_reachable

    name = weight_name or DEFAULT_WEIGHT_NAME
    try:
        return Path(hf_hub_download(repo, name, local_files_only=True))
    except Exception:
        why = hub_reachable()
        if why:
            raise UnsupportedRequestError(f"LoRA '{repo}' ({name}) is not in the local Hugging Face cache and cannot "
                                          f"be downloaded: {why}; download it where there is a network, or give a "
                                          f"local file") from None
    try:
        return Path(hf_hub_download(repo, name))
    except Exception as exc:
        raise UnsupportedRequestError(f"LoRA '{repo}': could not download '{name}': {exc}") from None


def lora_hash(path: Path) -> str:
    """SHA-256 (hex) of a safetensors file's data after its header, as A1111 hashes LoRAs; of the whole file
    for any other format."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        if path.suffix == ".safetensors":
            header = int.from_bytes(fh.read(8), "little")
            fh.seek(8 + header)
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class LoraSwitch:
    """Activates exactly a request's LoRAs on a pipeline, loading each weights file once (as a named adapter)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # two threads must not load the same adapter into one pipeline

    @staticmethod
    def adapter_name(lora: Lora) -> str:
        # One adapter per weights file: the same file under two names is loaded once.
        return "wb_" + (lora.hash or hashlib.sha256(f"{lora.source}|{lora.weight_name}".encode()).hexdigest())[:16]

    def apply(self, pipe: DiffusionPipeline, loras: tuple[Lora, ...]) -> None:
        """Load what is missing, then activate exactly the enabled ``loras`` at their scales."""
        active = [lora for lora in loras if lora.enabled]
        with self._lock:
            held = _adapters(pipe)
            for lora in active:
                name = self.adapter_name(lora)
                if name not in held:
                    _load(pipe, lora_file(lora.source, lora.weight_name), name)
                    held.add(name)
            if not held:
                return  # a pipeline that never had a LoRA runs exactly as diffusers loaded it
            if not active:
                pipe.disable_lora()
                return
            pipe.enable_lora()
            pipe.set_adapters([self.adapter_name(lora) for lora in active],
                              adapter_weights=[float(lora.scale) for lora in active])


def _adapters(pipe: DiffusionPipeline) -> set[str]:
    """The adapters loaded into any component of ``pipe`` (peft keeps them on the modules)."""
    if not hasattr(pipe, "get_list_adapters"):
        return set()
    try:
        listed = pipe.get_list_adapters()
    except ValueError:  # diffusers without peft: "PEFT backend is required", so no adapter can be loaded
        return set()
    return {name for names in listed.values() for name in names}


def _load(pipe: DiffusionPipeline, path: Path, adapter: str) -> None:
    if not hasattr(pipe, "load_lora_weights"):
        raise UnsupportedRequestError(f"{type(pipe).__name__} takes no LoRAs (it has no load_lora_weights)")
    try:
        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter)
    except ImportError as exc:
        raise UnsupportedRequestError(f"LoRAs need peft: pip install 'workbench[diffusers]' ({exc})") from exc
    except (ValueError, KeyError, RuntimeError) as exc:
        raise UnsupportedRequestError(f"LoRA {path} does not fit {type(pipe).__name__}: {exc}") from exc
