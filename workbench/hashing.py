"""Canonical JSON and run keys: a format contract.

``canonical_json`` is the byte-exact serialisation every hash in the workbench is taken
over: keys sorted, no whitespace, UTF-8 kept as is, no NaN/Infinity, floats that are whole
numbers written as floats (``7.0``), tuples as lists. Changing it changes every run key, and
so every "already done" lookup: bump ``RUN_KEY_VERSION`` if you must.

``run_key(fields)`` = first 32 hex digits of SHA-256 over
``canonical_json({"v": RUN_KEY_VERSION, **fields})``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["RUN_KEY_VERSION", "canonical_json", "content_hash", "run_key"]

RUN_KEY_VERSION = 1


def _normalise(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"canonical JSON cannot hold the non-finite number {value!r}")
        return value
    if isinstance(value, Mapping):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    raise TypeError(f"canonical JSON cannot hold a value of type {type(value).__name__}: {value!r}")


def canonical_json(value: Any) -> str:
    """Serialise ``value`` deterministically (see the module docstring for the rules).

    >>> canonical_json({"b": 1, "a": [1.0, "é"]})
    '{"a":[1.0,"é"],"b":1}'
    """
    return json.dumps(_normalise(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def content_hash(data: bytes | str, length: int = 16) -> str:
    """Short SHA-256 hex digest of bytes or text, for versions and fingerprints."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()[:length]


def run_key(fields: Mapping[str, Any]) -> str:
    """Hash of everything that determines an image; equal keys mean the same image."""
    payload = canonical_json({"v": RUN_KEY_VERSION, **fields})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]
