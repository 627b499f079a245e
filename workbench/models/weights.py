"""The identity of a local model's weights: a content hash of its pipeline folder, cached by file stats.

A local folder (or an embedded model) is named by its path, and a path says nothing about what is in
it: retrain in place, or rebuild the embedded model at a new version, and the same name holds other
weights. The hash is part of the run key (``GenerationRequest.model_hash``), so images made with
other weights are never taken for already done.

Hashing gigabytes on every plan would be slow, so the result is cached in the workbench home, keyed
by the folder's listing of (file, size, mtime): any change to a weight file makes it hash again.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from ..config import workbench_home
from ..files import write_atomic

__all__ = ["weights_hash", "WEIGHT_SUFFIXES"]

# What decides a pipeline's output: weights, configs, tokenizer files.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")
_lock = threading.Lock()


def _files(root: Path) -> list[Path]:
    return sorted(f for f in root.rglob("*") if f.suffix in WEIGHT_SUFFIXES and f.is_file())


def _stamp(root: Path, files: list[Path]) -> str:
    listing = [(str(f.relative_to(root)), st.st_size, st.st_mtime_ns) for f in files for st in [f.stat()]]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def _content_hash(root: Path, files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(root)).encode())
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def _cache_file() -> Path:
    return workbench_home() / "cache" / "weights-hashes.json"


def _read_cache(path: Path) -> dict[str, dict[str, str]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def weights_hash(folder: str | Path) -> str | None:
    """16 hex digits of SHA-256 over the names and contents of ``folder``'s weight files; None if no folder.

    Example:
        >>> weights_hash("/no/such/folder") is None
        True
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        return None
    root = root.resolve()
    files = _files(root)
    stamp = _stamp(root, files)
    cache_path = _cache_file()
    with _lock:
        cached = _read_cache(cache_path).get(str(root))
        if cached and cached.get("stamp") == stamp:
            return cached["hash"]
        value = _content_hash(root, files)
        cache = _read_cache(cache_path)  # again: another process may have written meanwhile
        cache[str(root)] = {"stamp": stamp, "hash": value}
        try:
            # atomic: a reader never sees half a file; 0644 under umask 022, as a plain open()
            write_atomic(cache_path, lambda f: f.write(json.dumps(cache).encode()))
        except OSError:
            pass  # a read-only home only costs hashing again next time
    return value
